"""`--bn-stats batch`: nets that train from random weights (the demo's).

The frozen default is covered by test_netgen.py (regeneration reproduces
prototxt/ byte for byte); here, what batch statistics change.
"""
import numpy as np
import pytest

from fcrn.net import netgen, options, resnet


def _layers(variant, phase, kind):
    return [l for l in netgen.net(variant, phase).layer if l.type == kind]


@pytest.mark.parametrize('batch_norm', resnet.BATCH_NORMS)
def test_batch_stats_train_test_deploy(batch_norm):
    v = netgen.Variant(depth=50, crop=96, batch_norm=batch_norm, bn_stats='batch',
                       bn_fraction=0.95)
    assert v.tag.endswith('_bnbatch')
    for phase in netgen.PHASES:
        bns = _layers(v, phase, 'LeanBatchNorm' if batch_norm == 'lean' else 'BatchNorm')
        assert len(bns) == 53
        for bn in bns:
            assert bn.batch_norm_param.use_global_stats == (phase != 'train'), (phase, bn.name)
            assert bn.batch_norm_param.moving_average_fraction == pytest.approx(0.95)
            assert [p.lr_mult for p in bn.param[:3]] == [0, 0, 0]
        affine = [list(bn.param[3:]) for bn in bns] if batch_norm == 'lean' else \
            [list(s.param) for s in _layers(v, phase, 'Scale')]
        assert all([p.lr_mult for p in ps] == [1, 1] and [p.decay_mult for p in ps] == [0, 0]
                   for ps in affine)
        convs = [c for c in _layers(v, phase, 'Convolution') if c.name != 'score']
        assert all(c.convolution_param.weight_filler.type == 'msra' for c in convs)
        # Each residual branch's last gamma starts at 0, every other at 1.
        scales = bns if batch_norm == 'lean' else _layers(v, phase, 'Scale')
        assert {s.name[len('bn' if batch_norm == 'lean' else 'scale'):]: s.scale_param.filler.value
                for s in scales if s.scale_param.filler.value != 1} == \
            {b[len('res'):] + '_branch2c': 0 for b in resnet.block_names(50)}


def test_frozen_default_has_no_fillers_or_learnt_affine():
    v = netgen.Variant(depth=50, crop=96)
    bns = _layers(v, 'train', 'LeanBatchNorm')
    convs = [c for c in _layers(v, 'train', 'Convolution') if c.name != 'score']
    assert len(bns) == len(convs) == 53  # every backbone convolution has its BN
    assert all(bn.batch_norm_param.use_global_stats for bn in bns)
    params = [p for bn in bns for p in bn.param]
    assert len(params) == 5 * 53 and all(p.lr_mult == 0 for p in params)
    assert not any(c.convolution_param.HasField('weight_filler') for c in convs)
    assert 'bn' not in v.tag.split('_')[-1]


def test_cli_and_validation(capsys):
    args, v, s = options.parse(['--out', 'x', '--depth', '50', '--bn-stats', 'batch',
                            '--bn-fraction', '0.9', '--random-seed', '3'])
    assert (v.bn_stats, v.bn_fraction, s.random_seed) == ('batch', 0.9, 3)
    assert netgen.solver(v, s, 'n').random_seed == 3
    assert not netgen.solver(v, netgen.SolverSettings(), 'n').HasField('random_seed')
    assert '--bn-stats batch' in ' '.join(options.to_argv(v, s))
    for argv, message in (
            (['--bn-fraction', '0.9'],                         # needs --bn-stats batch
             'bn-fraction (moving-average fraction) needs bn-stats batch'),
            (['--bn-stats', 'batch', '--bn-fraction', '1.5'],
             'argument --bn-fraction: must be in (0, 1), not 1.5')):
        with pytest.raises(SystemExit) as exit_info:
            options.parse(['--out', 'x'] + argv)
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err


def test_random_init_gives_a_working_deploy_net(tmp_path):
    """Loaded without weights, the fillers alone give finite, varied scores
    (with frozen stats and no fillers every backbone weight would be 0)."""
    import caffe
    # Unshared: the intermediate blobs are read below.
    v = netgen.Variant(depth=50, crop=64, kernel=3, dilation=2, bn_stats='batch',
                       share_memory=False)
    path = tmp_path / 'deploy.prototxt'
    path.write_text(netgen.net_text(netgen.net(v, 'deploy')))
    caffe.set_random_seed(0)
    net = caffe.Net(str(path), caffe.TEST)
    # Fresh statistics are zero means and variances; give them unit variance
    # as a trained net would have.
    for name, blobs in net.params.items():
        if name.startswith('bn'):
            blobs[1].data[...] = 1
            blobs[2].data[...] = 1
    net.blobs['data'].data[...] = np.random.default_rng(0).normal(0, 50, (1, 3, 64, 64))
    score = net.forward()['prob']
    assert np.isfinite(score).all() and score.std() > 0
    assert net.blobs['res5c'].data.std() > 0
    # With its residual branch switched off (gamma 0), a block that is not
    # the first of its stage passes its input on unchanged.
    for before, block in (('res2a', 'res2c'), ('res4a', 'res4f'), ('res5a', 'res5c')):
        np.testing.assert_array_equal(net.blobs[block].data, net.blobs[before].data)
