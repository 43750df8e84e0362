"""The project's scripts/*.py as modules, for tests that call main() in-process."""
import importlib.util
import os

SCRIPTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts")


def load(name):
    """scripts/<name>.py, executed afresh as module `<name>_script`."""
    spec = importlib.util.spec_from_file_location(name + "_script",
                                                  os.path.join(SCRIPTS, name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
