"""scripts/bench_memory.py's training step: `caffe train` on a generated
solver, its data layer and TEST net included, measured per process."""
from tools.bench import memory


def test_the_generated_training_step_shares_memory_and_the_option_turns_it_off():
    shared = memory.training_step('lean', 50, 97, True)
    unshared = memory.training_step('lean', 50, 97, False)
    assert shared['share_memory'] and not unshared['share_memory']
    assert 0 < shared['peak_rss'] < unshared['peak_rss']
    lines = memory.step_report([shared, unshared])
    assert '| 1/8, LeanBatchNorm | true |' in lines[6]
    assert lines[-2] == '- lean: shared / unshared peak memory %.2f' % (
        shared['peak_rss'] / unshared['peak_rss'])
