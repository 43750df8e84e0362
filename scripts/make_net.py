#!/usr/bin/env python3
"""Write train/test/deploy/solver.prototxt of one FCRN variant and print its FoV.

Example (Table 4, best VOC row):
  scripts/make_net.py --dataset voc --depth 101 --resolution 1/8 --kernel 5 \\
      --dilation 12 --bootstrap 512 --out nets/r101

A new folder appears complete or not at all; a folder that is not empty needs
--force (then only the four files are replaced); one that holds the classes
file, a data list or an image or label a list names is refused. A data list
given by --train-source or --val-source that is not there is warned of.
"""
import logging
import sys

from fcrn import cli
from fcrn.net import netgen, options

log = logging.getLogger("make_net")


def main(argv=None):
    parser = options.build_parser(prog="make_net.py", description=__doc__)
    args, variant, settings = options.parse(argv, parser)
    command = options.command(options.to_argv(variant, settings), args.out)

    def job():
        netgen.write(args.out, variant, settings, force=args.force, command=command,
                     inputs=[args.classes])
        log.info("wrote %s (%s)", args.out, variant.tag)
        print("FoV: %d" % variant.fov)
    return cli.run(job, log.name)


if __name__ == "__main__":
    sys.exit(main())
