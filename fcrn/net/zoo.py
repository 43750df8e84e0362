"""Every FCRN variant of the paper's Tables 1-4, as make_net.py command lines.

`entries()` lists one Entry per folder of prototxt/ (rows shared by several
tables, e.g. Table 4's F/F baseline, are one folder citing all of them);
`regenerate(root)` writes them all plus the index prototxt/README.md.
The paper's FoV column is kept here as data, to be checked against the
generator, not computed from it.
"""
import collections
import os

from . import netgen, options
from .. import fileio

Entry = collections.namedtuple('Entry', 'tables dataset argv paper_fov')

# (resolution, kernel, dilation, FoV) rows of Table 1 (VOC), for each depth.
_VANILLA = [(16, 3, 6, 208), (8, 3, 6, 104), (8, 3, 12, 200), (8, 3, 18, 296),
            (8, 5, 6, 200), (8, 5, 12, 392), (8, 7, 6, 296)]
# Table 2 (Cityscapes) has the same rows plus two larger FoVs for ResNet-50.
_CITYSCAPES_EXTRA = {50: [(8, 5, 18, 584), (8, 7, 12, 584)]}
# Table 3: ResNet-101 with 5x5 classifiers trained at 1/16 and 1/8, tested at
# finer resolutions. The paper does not give the 1/16 net's dilation; 6 gives
# FoV 400, the closest to the 1/8 net's 392.
_TABLE3 = [(16, 6, (16, 8, 4)), (8, 12, (8, 4))]
# Table 4: 1/8, 5x5, dilation 12; bootstrapping K (None: F) and dropout.
_TABLE4 = {'voc': [(101, [None, 256, 512, 1024]), (152, [None, 256, 512, 1024])],
           'cityscapes': [(152, [None, 256, 512, 1024])]}
_TABLE4_DROPOUT = {'voc': [101, 152]}
# Table 4 has no FoV column; its 1/8, 5x5, dilation-12 nets are Table 1's FoV-392 rows.
_TABLE4_FOV = 392
# The committed solvers say solver_mode CPU whatever build regenerates them, so
# that they run as they are on the default (CPU) build; `caffe train -gpu N`
# (scripts/train.py --gpu N) trains them on a GPU: the tool's -gpu overrides
# the solver's mode.
SETTINGS = netgen.SolverSettings(solver_mode='CPU')


# The paper's scores on the val sets (pixel accuracy, mean accuracy, mean IoU,
# %), its tables' rows as printed: Tables 1 and 2 by depth, resolution,
# kernel, dilation (then the FoV column); Table 3 (ResNet-101, 5x5) by
# training and testing resolution; Table 4 (1/8, 5x5, dilation 12) by
# dataset, depth, bootstrapping K (F: none) and dropout (T/F).
_PAPER = {
    'Table 1': """
        50 1/16 3 6 208 92.74 78.68 69.09 | 50 1/8 3 6 104 92.50 77.60 67.61
        50 1/8 3 12 200 93.03 79.51 69.94 | 50 1/8 3 18 296 93.02 79.28 70.01
        50 1/8 5 6 200 92.98 79.34 69.81 | 50 1/8 5 12 392 93.25 79.84 71.10
        50 1/8 7 6 296 93.14 79.54 70.67
        101 1/16 3 6 208 93.22 80.16 70.93 | 101 1/8 3 6 104 93.20 79.87 70.20
        101 1/8 3 12 200 93.68 81.29 72.34 | 101 1/8 3 18 296 93.67 81.15 72.37
        101 1/8 5 6 200 93.52 81.00 71.97 | 101 1/8 5 12 392 93.87 81.87 73.41
        101 1/8 7 6 296 93.61 81.34 72.56
        152 1/16 3 6 208 93.32 80.21 71.27 | 152 1/8 3 6 104 93.25 79.78 70.23
        152 1/8 3 12 200 93.65 80.97 72.29 | 152 1/8 3 18 296 93.62 80.44 71.85
        152 1/8 5 6 200 93.59 80.92 71.95 | 152 1/8 5 12 392 93.85 81.53 73.32
        152 1/8 7 6 296 93.81 81.38 72.94""",
    'Table 2': """
        50 1/16 3 6 208 93.83 74.67 66.41 | 50 1/8 3 6 104 94.38 74.89 66.58
        50 1/8 3 12 200 94.47 75.91 67.68 | 50 1/8 3 18 296 94.53 76.52 68.38
        50 1/8 5 6 200 94.48 76.17 68.04 | 50 1/8 5 12 392 94.61 76.68 68.71
        50 1/8 5 18 584 94.64 76.34 68.53 | 50 1/8 7 6 296 94.58 76.88 68.79
        50 1/8 7 12 584 94.64 76.57 68.79
        101 1/16 3 6 208 94.11 76.26 67.62 | 101 1/8 3 6 104 94.68 77.15 68.58
        101 1/8 3 12 200 94.78 78.30 69.99 | 101 1/8 3 18 296 94.82 78.21 70.00
        101 1/8 5 6 200 94.75 78.11 69.89 | 101 1/8 5 12 392 94.87 79.17 71.16
        101 1/8 7 6 296 94.75 78.43 70.40
        152 1/16 3 6 208 94.26 76.89 68.30 | 152 1/8 3 6 104 94.82 78.30 69.69
        152 1/8 3 12 200 94.94 78.79 70.66 | 152 1/8 3 18 296 94.93 79.19 70.92
        152 1/8 5 6 200 94.88 78.77 70.61 | 152 1/8 5 12 392 95.00 79.38 71.51
        152 1/8 7 6 296 94.91 79.08 70.87""",
    'Table 3': """
        1/16 1/16 93.49 80.96 72.19 | 1/16 1/8 93.75 81.71 72.96 | 1/16 1/4 93.83 81.98 73.24
        1/8 1/8 93.87 81.87 73.41 | 1/8 1/4 93.94 82.13 73.65""",
    'Table 4': """
        voc 101 F F 93.87 81.87 73.41 | voc 101 256 F 94.11 81.44 74.41
        voc 101 512 F 94.23 82.09 74.80 | voc 101 1024 F 94.08 81.84 74.17
        voc 101 512 T 94.27 84.82 75.45
        voc 152 F F 93.85 81.53 73.32 | voc 152 256 F 94.19 81.64 74.53
        voc 152 512 F 94.23 82.06 74.72 | voc 152 1024 F 94.15 81.94 74.40
        voc 152 512 T 94.46 85.13 75.90
        cityscapes 152 F F 95.00 79.38 71.51 | cityscapes 152 256 F 95.41 81.37 73.97
        cityscapes 152 512 F 95.46 82.04 74.64 | cityscapes 152 1024 F 95.38 81.00 73.45""",
}


def paper_table(table):
    """{row key (the row's leading fields): (pixel acc., mean acc., mean IoU)}
    of one of the paper's Tables 1-4."""
    rows = {}
    for row in _PAPER[table].replace('\n', '|').split('|'):
        fields = row.split()
        if fields:
            rows[tuple(fields[:-3])] = tuple(float(v) for v in fields[-3:])
    return rows


def paper_scores(entry):
    """{table: (pixel acc., mean acc., mean IoU)} of the paper's rows that
    `entry` reproduces (none for Sec. 3.2, which gives no score)."""
    v = variant(entry)
    keys = {
        'Table 1': (str(v.depth), '1/%d' % v.resolution, str(v.kernel), str(v.dilation),
                    str(v.fov)),
        'Table 3': ('1/%d' % v.resolution, '1/%d' % v.deploy_resolution),
        'Table 4': (v.dataset, str(v.depth), str(v.bootstrap or 'F'), 'T' if v.dropout else 'F'),
    }
    keys['Table 2'] = keys['Table 1']
    return {t: paper_table(t)[keys[t]] for t in entry.tables.split(', ') if t in _PAPER}


def _argv(dataset, depth, resolution, kernel, dilation, *extra):
    return ['--dataset', dataset, '--depth', str(depth), '--resolution', '1/%d' % resolution,
            '--kernel', str(kernel), '--dilation', str(dilation)] + list(extra)


def _rows():
    for depth in (50, 101, 152):
        for row in _VANILLA:
            yield 'Table 1', 'voc', _argv('voc', depth, *row[:3]), row[3]
    for depth in (50, 101, 152):
        for row in _VANILLA + _CITYSCAPES_EXTRA.get(depth, []):
            yield 'Table 2', 'cityscapes', _argv('cityscapes', depth, *row[:3]), row[3]
    for resolution, dilation, tests in _TABLE3:
        for test in tests:
            extra = ['--test-resolution', '1/%d' % test] if test != resolution else []
            yield 'Table 3', 'voc', _argv('voc', 101, resolution, 5, dilation, *extra), None
    for dataset, rows in sorted(_TABLE4.items(), reverse=True):  # VOC first, as the paper
        for depth, keeps in rows:
            for keep in keeps:
                extra = ['--bootstrap', str(keep)] if keep else []
                yield 'Table 4', dataset, _argv(dataset, depth, 8, 5, 12, *extra), _TABLE4_FOV
            if depth in _TABLE4_DROPOUT.get(dataset, ()):
                yield ('Table 4', dataset, _argv(dataset, depth, 8, 5, 12, '--bootstrap', '512',
                                                 '--dropout'), _TABLE4_FOV)
    # Sec. 3.2: the 1/4 network simulated by four shifted passes of the 1/8 one.
    yield 'Sec. 3.2', 'voc', _argv('voc', 101, 8, 5, 12, '--simulate-resolution', '1/4'), None


def folder(entry):
    return os.path.join('prototxt', entry.dataset, variant(entry).tag)


def variant(entry):
    return options.parse(entry.argv + ['--out', '-'])[1]


def entries():
    """One Entry per folder, in table order; a folder cites every row it serves."""
    merged = collections.OrderedDict()
    for tables, dataset, argv, fov in _rows():
        entry = Entry(tables, dataset, argv, fov)
        key = folder(entry)
        if key in merged:
            old = merged[key]
            cited = old.tables if tables in old.tables else old.tables + ', ' + tables
            merged[key] = old._replace(tables=cited, paper_fov=old.paper_fov or fov)
        else:
            merged[key] = entry
    return list(merged.values())


def _index(rows):
    lines = [
        '# FCRN network definitions',
        '',
        'Generated by `scripts/regen_prototxt.py` (do not edit by hand; a test',
        'regenerates them and fails on any difference). One folder per variant of',
        'the paper\'s Tables 1-4, each with `train.prototxt`, `test.prototxt`',
        '(validation, with loss and accuracy), `deploy.prototxt` (input `data`,',
        'output `prob`) and `solver.prototxt`. Folder names: `r<depth>_s<stride>_k<kernel>',
        '_d<dilation>`, then `_bs<K>` (bootstrapping, min_kept K), `_do` (dropout),',
        '`_test<S>` (deployed at 1/S), `_sim<S>` (1/S simulated by four shifted passes).',
        'All use LeanBatchNorm; `scripts/make_net.py --batch-norm caffe` gives the',
        'stock BatchNorm + Scale form. Each file\'s second line is the command that',
        'made it. Run solvers from the repository root: `scripts/train.py --solver',
        'prototxt/voc/r101_s8_k5_d12/solver.prototxt --weights <converted ImageNet model>`',
        '(or `mkdir -p snapshots` and `caffe train -solver ... -weights ...`: Caffe',
        'does not make the snapshot folder, `train.py` does). The solvers say `solver_mode: CPU`;',
        '`--gpu N` (`-gpu N`) trains on a GPU of a CUDA build.',
        '',
        'The last three columns are the paper\'s own scores on the val sets (%), what',
        'training as the paper trains (ImageNet ResNets, VOC + SBD or Cityscapes fine)',
        'should approach. This project has not trained these nets on the real datasets',
        '(that takes the datasets and a GPU): no score of its own is claimed. The',
        'paper gives no score for the Sec. 3.2 net.',
        '',
        'Where the paper is silent these are the project\'s choices, not the paper\'s:',
        'the Table 3 1/16 net\'s dilation (6, FoV 400, the closest to the 1/8 net\'s',
        '392), the dropout\'s blocks and ratio (res5a-c, 0.3), and the solvers\'',
        'settings (DeepLab\'s ResNet-101 ones: SGD, poly with power 0.9, base_lr 2.5e-4,',
        'momentum 0.9, weight decay 5e-4, 20,000 iterations of `iter_size` 10 crops).',
        'A `_test<S>` folder\'s train, test and solver files train and validate its',
        'base net at the training resolution; only its `deploy.prototxt` runs at 1/S.',
        '',
        '| Paper | Dataset | Depth | Resolution | Kernel | Dilation | FoV | Bootstrapping '
        '| Dropout | Test resolution | Folder | Pixel acc. | Mean acc. | Mean IoU |',
        '|---|---|---|---|---|---|---|---|---|---|---|---:|---:|---:|',
    ]
    for entry in rows:
        v = variant(entry)
        path = os.path.relpath(folder(entry), 'prototxt')
        scores = list(paper_scores(entry).values())
        lines.append('| %s | %s | %d | 1/%d | %d | %d | %d | %s | %s | 1/%d%s | [%s](%s/) | %s |'
                     % (entry.tables, entry.dataset, v.depth, v.resolution, v.kernel, v.dilation,
                        v.fov, v.bootstrap or 'no',
                        'ratio %g, top %d blocks' % (v.dropout_ratio, v.dropout_blocks)
                        if v.dropout else 'no', v.deploy_resolution,
                        ' (4 passes)' if v.simulate else '', path, path,
                        ' | '.join('%.2f' % x for x in scores[0]) if scores else '- | - | -'))
    return '\n'.join(lines) + '\n'


def regenerate(root, progress=None):
    """Write every folder and the index under `root`; returns the entries."""
    rows = entries()
    for entry in (progress(rows) if progress else rows):
        rel = folder(entry)
        out = os.path.join(root, rel)
        v = variant(entry)
        netgen.write(out, v, SETTINGS, force=True, net_dir=rel,
                     command=options.command(options.to_argv(v, SETTINGS), rel))
    fileio.atomic_write(os.path.join(root, 'prototxt', 'README.md'), _index(rows))
    return rows
