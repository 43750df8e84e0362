#!/usr/bin/env python3
"""Convert a released ImageNet ResNet caffemodel (BatchNorm + Scale) into the
initial weights of a generated FCRN (LeanBatchNorm or BatchNorm + Scale).

Protobuf only: pycaffe is not imported. Reports every copied, skipped and new
layer; exits non-zero, writing nothing, on a shape mismatch or on a layer with
parameters that the source cannot initialise (other than --new-layers).

  scripts/convert_weights.py ResNet-101-model.caffemodel \
      prototxt/voc/r101_s8_k5_d12/train.prototxt init/r101_fcrn.caffemodel
"""
import argparse
import logging
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))

from fcrn.net import convert  # noqa: E402
from fcrn.net.fileio import atomic_write_bytes  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('source', help='ImageNet ResNet .caffemodel')
    parser.add_argument('target', help='FCRN prototxt (train, test or deploy)')
    parser.add_argument('output', help='.caffemodel to write')
    parser.add_argument('--new-layers', nargs='*', default=list(convert.NEW_LAYERS),
                        metavar='NAME', help='layers expected to be absent from the source '
                        '(default: %(default)s)')
    parser.add_argument('--force', action='store_true', help='overwrite an existing output')
    parser.add_argument('-v', '--verbose', action='store_true', help='list every copied layer')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format='%(levelname)s %(message)s')
    if os.path.exists(args.output) and not args.force:
        parser.error('%s exists; use --force to overwrite' % args.output)

    source = convert.read(args.source, binary=True)
    target = convert.read(args.target, binary=False)
    try:
        weights, report = convert.convert(source, target, args.new_layers)
    except ValueError as error:
        parser.error(str(error))
    for name, sources in report.copied:
        logging.debug('copied %s <- %s', name, ' + '.join(sources))
    logging.info('copied %d layers', len(report.copied))
    for name in report.skipped:
        logging.info('skipped %s (not in the target net)', name)
    for name in report.new:
        logging.info('new %s (left to its filler)', name)
    if report.problems:
        for problem in report.problems:
            logging.error('%s', problem)
        logging.error('%d problems; nothing written', len(report.problems))
        return 1
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    atomic_write_bytes(args.output, weights.SerializeToString())
    logging.info('wrote %s', args.output)
    return 0


if __name__ == '__main__':
    sys.exit(main())
