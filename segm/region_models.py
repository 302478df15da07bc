"""The region-graph models: layers on each image's SLIC superpixel graph, painted back to pixels.

model.py lists them beside the pixel-grid models; the layers are in region_layers.py.
"""
from segm.batch_norm import bn_relu
from segm.region_layers import (PaintRegions, RegionChebConv, RegionContext, RegionFeatures,
                                RegionGraph, SplineConv)
from segm.tf_quiet import keras


def _region_model(name, graph, layers, heads, num_classes, height, width, shape=False):
    """SLIC region graphs (regions.py), ~227 nodes per 32x32 image, residual layers (each
    layers[i](x, matrices) of 64 channels), painted back to pixels; with heads, each image's
    readout (RegionContext) after every second layer. Node features regions.FEATURES, batch
    normed; with shape, SHAPE_FEATURES too, read by the first layer itself as a CNN's reads
    the pixels."""
    inputs = keras.Input((height, width, 3))
    labels, *matrices = graph(inputs)                                 # (B, H, W), sparse
    features = RegionFeatures(shape)([inputs, labels])                # (N, 9 or 14)
    features = keras.layers.BatchNormalization(momentum=0.9)(features)
    x = keras.layers.Dense(64)(features)
    for i, layer in enumerate(layers):
        y = layer(features if shape and i == 0 else x, matrices)
        x = keras.layers.Add()([x, bn_relu(y)])                      # (N, 64)
        if heads and i % 2:
            x = keras.layers.Add()([x, bn_relu(RegionContext(heads)([x, labels]))])
    x = keras.layers.Dense(num_classes)(x)                            # (N, K)
    return keras.Model(inputs, PaintRegions()([x, labels]), name=name)  # (B, H, W, K)


def _chebyshev(x, matrices):
    return RegionChebConv(64, 3, use_bias=False)([x, matrices[-1]])  # L~ comes last


def regions(num_classes, height, width):
    """Chebyshev filters (K=3) on region graphs: isotropic, they see no direction. ChebConv, as
    in gunet: each layer weighs X, L~X and T_2 X apart, so it can tell a region from its
    neighbours (a high-pass X - ÂX), which a digit's stroke needs; GraphConv's Â averages."""
    return _region_model("regions", RegionGraph(), [_chebyshev] * 4, 0, num_classes, height,
                         width)


def _spline_regions(name, pseudo, kinds, heads, shape, num_classes, height, width):
    """SplineConv layers ("s" in kinds) on 3x3 knots (or 3 distances) over 3 pixels, the typical
    spacing of neighbouring centroids (median 2.3, 90% within 3.9), Chebyshev ones ("c") on
    the same graph, and each image's context."""
    graph = RegionGraph(pseudo=pseudo, size=3, radius=3.0, laplacian="c" in kinds)

    def spline(x, matrices):
        return SplineConv(64, graph.kernels, use_bias=False)([x, matrices[0]])
    layers = [{"s": spline, "c": _chebyshev}[kind] for kind in kinds]
    return _region_model(name, graph, layers, heads, num_classes, height, width, shape)


def regions_offset(num_classes, height, width):
    """SplineConv on region graphs, weighing each neighbour by its centroid's offset (dy, dx)
    (edge_geometry.py): it sees direction, as dgcn does on the grid. Three layers: SplineConv on
    all features, SHAPE_FEATURES too; Chebyshev (isotropic, two hops); SplineConv. An 8-head
    context after the second: where a stroke lies in a region is finer direction; heads, parts."""
    return _spline_regions("regions_offset", "offset", "scs", 8, True, num_classes, height, width)


def regions_distance(num_classes, height, width):
    """SplineConv on centroid distances: blind to direction, so rotation invariant (no shape)."""
    return _spline_regions("regions_distance", "distance", "s" * 6, 1, False, num_classes, height,
                           width)
