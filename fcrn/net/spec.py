"""Caffe's NetSpec (python/caffe/net_spec.py of BVLC Caffe, BSD 2-Clause) on
Caffe's protobuf module alone, so that generating a net needs no pycaffe.

Used as Caffe's: `n = NetSpec(); n.data = layers.Input(...); n.conv =
layers.Convolution(n.data, kernel_size=3, ...); n.to_proto()`, with tops
named by the attributes they are assigned to, `ntop` and `in_place` as
there, keyword arguments ending in `param` assigned to the layer and the
others to the layer's own parameter message (`convolution_param` for a
Convolution), and `params.Pooling.MAX` for enum values. The NetParameter it
makes equals pycaffe's field for field.
"""
import collections
import functools

from .. import caffeio


@functools.lru_cache(maxsize=None)
def _param_names():
    """{layer type: name of its parameter field without `_param`}, from
    LayerParameter's fields (ConvolutionParameter convolution_param ->
    Convolution: convolution)."""
    layer = caffeio.caffe_pb2().LayerParameter()
    names = {}
    for field in layer.DESCRIPTOR.fields:
        if field.name.endswith('_param'):
            type_name = field.message_type.name
            names[type_name[:-len('Parameter')]] = field.name[:-len('_param')]
    return names


def assign_proto(proto, name, val):
    """Assign a Python value to field `name`: lists become repeated fields
    (a single value given for a repeated field, a one-element list), dicts
    messages, anything else a scalar."""
    is_repeated_field = hasattr(getattr(proto, name), 'extend')
    if is_repeated_field and not isinstance(val, list):
        val = [val]
    if isinstance(val, list):
        if isinstance(val[0], dict):
            for item in val:
                proto_item = getattr(proto, name).add()
                for k, v in item.items():
                    assign_proto(proto_item, k, v)
        else:
            getattr(proto, name).extend(val)
    elif isinstance(val, dict):
        for k, v in val.items():
            assign_proto(getattr(proto, name), k, v)
    else:
        setattr(proto, name, val)


class Top:
    """One output blob of a layer (`fn`, the n-th of its tops)."""

    def __init__(self, fn, n):
        self.fn = fn
        self.n = n

    def _to_proto(self, layers, names, autonames):
        return self.fn._to_proto(layers, names, autonames)


class Function:
    """A layer: its type, its inputs (Tops of other layers) and parameters."""

    def __init__(self, type_name, inputs, params):
        self.type_name = type_name
        for index, top in enumerate(inputs):
            if not isinstance(top, Top):
                raise TypeError('%s input %d is not a Top (type is %s)'
                                % (type_name, index, type(top)))
        self.inputs = inputs
        self.params = dict(params)
        self.ntop = self.params.pop('ntop', 1)
        self.in_place = self.params.pop('in_place', False)
        self.tops = tuple(Top(self, n) for n in range(self.ntop))

    def _get_name(self, names, autonames):
        if self not in names and self.ntop > 0:
            names[self] = self._get_top_name(self.tops[0], names, autonames)
        elif self not in names:
            autonames[self.type_name] += 1
            names[self] = self.type_name + str(autonames[self.type_name])
        return names[self]

    def _get_top_name(self, top, names, autonames):
        if top not in names:
            autonames[top.fn.type_name] += 1
            names[top] = top.fn.type_name + str(autonames[top.fn.type_name])
        return names[top]

    def _to_proto(self, layers, names, autonames):
        if self in layers:
            return
        bottom_names = []
        for top in self.inputs:
            top._to_proto(layers, names, autonames)
            bottom_names.append(layers[top.fn].top[top.n])
        layer = caffeio.caffe_pb2().LayerParameter()
        layer.type = self.type_name
        layer.bottom.extend(bottom_names)
        if self.in_place:
            layer.top.extend(layer.bottom)
        else:
            for top in self.tops:
                layer.top.append(self._get_top_name(top, names, autonames))
        layer.name = self._get_name(names, autonames)
        for k, v in self.params.items():
            if k.endswith('param'):   # a LayerParameter field: loss_param, param, ...
                assign_proto(layer, k, v)
                continue
            try:
                assign_proto(getattr(layer, _param_names()[self.type_name] + '_param'), k, v)
            except (AttributeError, KeyError):
                assign_proto(layer, k, v)
        layers[self] = layer


class NetSpec:
    """Tops assigned as attributes (or items); `to_proto` makes the
    NetParameter of every layer needed for them, named as assigned."""

    def __init__(self):
        super().__setattr__('tops', collections.OrderedDict())

    def __setattr__(self, name, value):
        self.tops[name] = value

    def __getattr__(self, name):
        return self.tops[name]

    def __setitem__(self, key, value):
        self.__setattr__(key, value)

    def __getitem__(self, item):
        return self.__getattr__(item)

    def to_proto(self):
        names = {v: k for k, v in self.tops.items()}
        autonames = collections.Counter()
        layers = collections.OrderedDict()
        for top in self.tops.values():
            top._to_proto(layers, names, autonames)
        net = caffeio.caffe_pb2().NetParameter()
        net.layer.extend(layers.values())
        return net


class Layers:
    """`layers.Convolution(bottom, kernel_size=3)`: a layer of that type."""

    def __getattr__(self, name):
        def layer_fn(*args, **kwargs):
            fn = Function(name, args, kwargs)
            if fn.ntop == 0:
                return fn
            if fn.ntop == 1:
                return fn.tops[0]
            return fn.tops
        return layer_fn


class Parameters:
    """`params.Pooling.MAX`: the enum value of PoolingParameter."""

    def __getattr__(self, name):
        class Param:
            def __getattr__(self, param_name):
                return getattr(getattr(caffeio.caffe_pb2(), name + 'Parameter'), param_name)
        return Param()


layers = Layers()
params = Parameters()
