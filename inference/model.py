"""The FER CNN architecture (Keras 3) and its analytic cost.

Architecture ``fer-vgg``: a VGG-style network (Simonyan & Zisserman 2014, arXiv:1409.1556) sized for 48x48 grey
faces and for CPU serving. Stages of 3x3 convolutions + batch normalisation (Ioffe & Szegedy 2015) + ReLU, 2x2 max
pooling between stages, global average pooling, a small dense head with dropout, softmax over the 7 FER2013 labels.
The first stage has a single convolution because convolutions at full 48x48 resolution dominate the cost.

Input: ``float32 (N, 48, 48, 1)`` grey values in 0..255 (the model rescales to [-1, 1] itself, so training and
serving share exactly one preprocessing step). Output: ``float32 (N, 7)`` probabilities in ``LABELS`` order.
"""

from __future__ import annotations

from inference.labels import NUM_CLASSES

ARCHITECTURE = "fer-vgg"
DEFAULT_STAGES: tuple[tuple[int, int], ...] = ((24, 1), (48, 1), (96, 2), (192, 2))


def build_model(
    stages: tuple[tuple[int, int], ...] = DEFAULT_STAGES,
    dense_units: int = 256,
    dropout: float = 0.4,
    image_size: int = 48,
    weight_decay: float = 1e-4,
):
    """Build the (uncompiled) Keras model.

    Args:
        stages: ``(filters, convolutions)`` per stage; each stage but the last ends in 2x2 max pooling.
        dense_units: width of the hidden dense layer of the head.
        dropout: dropout rate before each dense layer (training only).
        image_size: input height = width in pixels.
        weight_decay: L2 factor on convolution and dense kernels.

    Returns:
        ``keras.Model`` mapping ``float32 (N, H, W, 1)`` in 0..255 to ``float32 (N, 7)`` softmax probabilities.
    """
    import keras
    from keras import layers, regularizers

    reg = regularizers.l2(weight_decay) if weight_decay else None
    inputs = keras.Input((image_size, image_size, 1), name="face")
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="rescale")(inputs)
    for s, (filters, convs) in enumerate(stages):
        for c in range(convs):
            x = layers.Conv2D(filters, 3, padding="same", use_bias=False, kernel_regularizer=reg, name=f"s{s}_conv{c}")(
                x
            )
            x = layers.BatchNormalization(name=f"s{s}_bn{c}")(x)
            x = layers.ReLU(name=f"s{s}_relu{c}")(x)
        if s < len(stages) - 1:
            x = layers.MaxPooling2D(2, name=f"s{s}_pool")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(dropout, name="drop0")(x)
    x = layers.Dense(dense_units, kernel_regularizer=reg, name="fc")(x)
    x = layers.BatchNormalization(name="fc_bn")(x)
    x = layers.ReLU(name="fc_relu")(x)
    x = layers.Dropout(dropout, name="drop1")(x)
    # The softmax stays float32 under a mixed-precision policy (bfloat16 probabilities are too coarse).
    outputs = layers.Dense(NUM_CLASSES, activation="softmax", dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=ARCHITECTURE)


def count_flops(model) -> int:
    """Multiply-accumulate-based FLOPs of one forward pass at batch 1 (2 FLOPs per multiply-add).

    Counts ``Conv2D`` (``2 * H_out * W_out * k_h * k_w * C_in * C_out``) and ``Dense`` (``2 * in * out``) layers,
    which hold >99 % of the work; batch norm, activations and pooling are ignored (the usual convention, e.g.
    the FLOP counts in the MobileNet papers).

    Args:
        model: a built Keras model.

    Returns:
        FLOPs as an int.
    """
    from keras import layers

    total = 0
    for layer in model.layers:
        if isinstance(layer, layers.Conv2D):
            _, h, w, c_out = layer.output.shape
            c_in = layer.input.shape[-1]
            k_h, k_w = layer.kernel_size
            total += 2 * h * w * k_h * k_w * c_in * c_out
        elif isinstance(layer, layers.Dense):
            total += 2 * layer.input.shape[-1] * layer.units
    return int(total)
