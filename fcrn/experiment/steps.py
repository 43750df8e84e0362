"""Resumable steps: an output is finished only when its step says so.

Each step has outputs (files or folders under the run folder) and a key (a
JSON-able description of everything it depends on: its settings and the
`stamp()` of the steps whose outputs it reads). When it finishes, a
record `.steps/<name>.json` holding the key is written atomically, last. A
later run skips a step whose record exists with the same key; any other
step's outputs are leftovers of an interrupted or differently configured run
and are deleted before the step runs again (unless the step resumes them
itself, as training resumes from its last snapshot). So an interrupted run,
or a full disk, never leaves anything that a rerun takes for finished.
"""
import json
import logging
import os
import shutil
import time

from fcrn.fileio import atomic_write

log = logging.getLogger(__name__)

RECORDS = '.steps'


class Steps:
    def __init__(self, root):
        self.root = root
        self.ran, self.skipped = [], []

    def path(self, *parts):
        return os.path.join(self.root, *parts)

    def _record(self, name):
        return self.path(RECORDS, name + '.json')

    def done(self, name, key):
        try:
            with open(self._record(name)) as f:
                return json.load(f).get('key') == json.loads(json.dumps(key))
        except (OSError, ValueError):
            return False

    def forget(self, name):
        """Mark a step unfinished (its record goes first, then its outputs)."""
        if os.path.exists(self._record(name)):
            os.remove(self._record(name))

    def run(self, name, outputs, key, action, keep_partial=False):
        """Run `action()` unless step `name` finished with this `key`.

        `outputs`: paths relative to the root that the step writes; removed
        before it runs unless `keep_partial`. Returns True if it ran.
        """
        if self.done(name, key):
            log.info('[%s] already complete, skipped', name)
            self.skipped.append(name)
            return False
        self.forget(name)
        if not keep_partial:
            for out in outputs:
                path = self.path(out)
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path)
                elif os.path.lexists(path):
                    os.remove(path)
        log.info('[%s] running', name)
        start = time.time()
        action()
        seconds = time.time() - start
        missing = [out for out in outputs if not os.path.exists(self.path(out))]
        if missing:
            raise RuntimeError('step %s finished without writing %s' % (name, ', '.join(missing)))
        os.makedirs(self.path(RECORDS), exist_ok=True)
        # The load averages when it finished say how busy the machine was.
        atomic_write(self._record(name), json.dumps(
            dict(key=key, outputs=outputs, seconds=round(seconds, 1), finished=time.time_ns(),
                 load=[round(x, 2) for x in os.getloadavg()]), indent=1, sort_keys=True))
        log.info('[%s] done in %.1f s', name, seconds)
        self.ran.append(name)
        return True

    def _field(self, name, field):
        try:
            with open(self._record(name)) as f:
                return json.load(f).get(field)
        except (OSError, ValueError):
            return None

    def seconds(self, name):
        """Wall time the step took when it ran (None if unknown)."""
        return self._field(name, 'seconds')

    def load(self, name):
        """Load averages (1, 5, 15 min) when the step finished (None if unknown)."""
        return self._field(name, 'load')

    def total_seconds(self):
        """Summed wall time of every finished step, each as it last ran."""
        try:
            names = [f[:-len('.json')] for f in os.listdir(self.path(RECORDS))
                     if f.endswith('.json')]
        except OSError:
            return 0.0
        return sum(self.seconds(name) or 0.0 for name in names)

    def stamp(self, *names):
        """{name: when it finished} of steps, for the key of a step that uses
        their outputs: a step that ran again makes those after it run again."""
        return {name: self._field(name, 'finished') for name in names}
