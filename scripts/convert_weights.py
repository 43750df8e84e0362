#!/usr/bin/env python3
"""Convert a released ImageNet ResNet caffemodel (BatchNorm + Scale) into the
initial weights of a generated FCRN (LeanBatchNorm or BatchNorm + Scale).

  scripts/convert_weights.py ResNet-101-model.caffemodel \\
      prototxt/voc/r101_s8_k5_d12/train.prototxt init/r101_fcrn.caffemodel

Protobuf only: pycaffe is not imported. Reports every copied, skipped and new
layer; exits 1, writing nothing, on a shape mismatch or on a layer with
parameters that the source cannot initialise (other than --new-layers). An
existing output is replaced only with --force.
"""
import logging
import sys

from fcrn import cli
from fcrn.net import convert


def parse_args(argv=None):
    parser = cli.parser(__doc__)
    parser.add_argument('source', help='ImageNet ResNet .caffemodel')
    parser.add_argument('target', help='FCRN prototxt (train, test or deploy)')
    parser.add_argument('output', help='.caffemodel to write')
    parser.add_argument('--new-layers', nargs='*', default=list(convert.NEW_LAYERS),
                        metavar='NAME', help='layers expected to be absent from the source '
                        '(default: %(default)s)')
    cli.add_force(parser, 'an existing output file', knows_its_own=False)
    parser.add_argument('-v', '--verbose', action='store_true', help='list every copied layer, and show Caffe\'s own log')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.verbose:
        logging.getLogger('fcrn.net.convert').setLevel(logging.DEBUG)
    return cli.run(lambda: convert.convert_files(args.source, args.target, args.output,
                                                 args.new_layers, args.force),
                   'convert_weights', args.verbose)


if __name__ == '__main__':
    sys.exit(main())
