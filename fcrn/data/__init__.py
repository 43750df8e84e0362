"""Datasets of the paper (Section 4.1), PASCAL VOC 2012 + SBD and Cityscapes,
and one's own.

- `voc.prepare_voc`, `cityscapes.prepare_cityscapes`: label PNGs and
  "image label" split lists from the user's own dataset trees;
- `folder.prepare_folder`: the same for one's own dataset, a folder of
  images and one of label PNGs;
- `sources.write_lmdb`: self-contained encoded records in an LMDB;
- `augment`, `prefetch`: what the `SegDataLayer` Python layer
  (layers/fcrn_data.py) runs.

What each dataset is (classes, palette, ignore label) is in `fcrn.datasets`.
"""
