"""Inference's inputs and outputs: image files, folders and list files as
(path, output name), the names made unique, and every output file planned and
checked before the net is loaded (never over an input, never into a folder
that is not an earlier output of the tool unless forced)."""
import collections
import os

from .. import fileio, imageio, lists
from ..errors import UsageError


def list_inputs(sources, list_file=None):
    """([(path, output name without extension)], [labels a list names]) from
    files, folders (recursive, names relative to the folder) and a list file
    (an image per line, or the "image label" lines the preparation scripts
    write; paths relative to the list's folder), with the names made unique
    (`unique_names`). The labels are inputs too: no output goes near them."""
    items = []
    for src in sources:
        if os.path.isdir(src):
            items += [(path, os.path.splitext(os.path.relpath(path, src))[0])
                      for path in lists.files_under(src, imageio.is_image_name)]
        else:
            items.append((src, os.path.splitext(os.path.basename(src))[0]))
    labels = []
    if list_file:
        pairs = lists.read_pairs(list_file, need_label=False)
        items += [(image, os.path.splitext(os.path.basename(image))[0]) for image, _ in pairs]
        labels = [label for _, label in pairs if label]
    return unique_names(items), labels


def unique_names(items):
    """Make the output names of [(path, name)] unique: inputs whose names
    collide are named by their paths relative to the folder they share
    (dir/a.jpg, dir/sub/a.jpg -> a, sub/a), or, in one folder, keep their
    extension (c.png, c.jpg -> c.png, c.jpg). UsageError listing a file given
    twice, or what still collides."""
    given = collections.Counter(os.path.realpath(path) for path, _ in items)
    twice = sorted("%s (%d times)" % (p, n) for p, n in given.items() if n > 1)
    if twice:
        raise UsageError("%d input(s) given more than once" % len(twice), twice)
    groups = collections.defaultdict(list)
    for i, (_, name) in enumerate(items):
        groups[name].append(i)
    names = [name for _, name in items]
    for name, members in groups.items():
        if len(members) < 2:
            continue
        paths = [os.path.abspath(items[i][0]) for i in members]
        folders = {os.path.dirname(p) for p in paths}
        if len(folders) > 1:
            common = os.path.commonpath(list(folders))
            renamed = [os.path.splitext(os.path.relpath(p, common))[0] for p in paths]
        else:
            renamed = [name + os.path.splitext(p)[1] for p in paths]
        for i, new in zip(members, renamed):
            names[i] = new
    count = collections.Counter(names)
    clashes = sorted("%s <- %s" % (n, p) for (p, _), n in zip(items, names) if count[n] > 1)
    if clashes:
        raise UsageError("%d input(s) would write the same output" % len(clashes), clashes)
    return [(path, name) for (path, _), name in zip(items, names)]


def plan(items, out, overlay_dir, labelids, inputs, force, tool):
    """(folders, [[label PNG, overlay JPEG, labelId PNG] per item], None
    where not asked for). Refuses outputs that collide with inputs (the
    items and `inputs`: sources, list file, labels, classes file), folders
    that hold an input, folders inside one another, and folders that are not
    `tool`'s earlier outputs unless `force`."""
    folders = [d for d in (out, overlay_dir, labelids) if d is not None]
    fileio.check_named(folders)
    if len(set(map(os.path.realpath, folders))) < len(folders):
        raise UsageError("--out, --overlay and --labelids must be different folders")
    options = {"--out": out, "--overlay": overlay_dir, "--labelids": labelids}
    for outer, a in options.items():
        for inner, b in options.items():
            # each folder is swapped in whole: the outer one's swap would drop it
            if a and b and inner != outer and fileio.within(os.path.realpath(b),
                                                             os.path.realpath(a)):
                raise UsageError("%s %s lies inside %s %s; give folders apart"
                                 % (inner, b, outer, a))
    plan = [[None if d is None else os.path.join(d, name + ext)
             for d, ext in ((out, ".png"), (overlay_dir, ".jpg"), (labelids, ".png"))]
            for _, name in items]
    inputs = [p for p, _ in items] + list(inputs)
    fileio.check_disjoint([f for files in plan for f in files if f], inputs)
    fileio.check_holds(options, inputs)
    fileio.check_free(folders, force, lambda d: fileio.is_marked(d, tool))
    return folders, plan
