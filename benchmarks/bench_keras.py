"""The homework's own framework as the peer of fercore's training step: hw3 in Keras (TensorFlow, CPU), timed
with `train_on_batch` on a fixed random batch, as benchmarks/bench_train.py times fercore's step.

    /path/to/tf-venv/bin/python benchmarks/bench_keras.py [--threads 2] [--batch 128] [--steps 5] [--rounds 3]
    .venv/bin/python benchmarks/bench_train.py --keras /path/to/tf-venv/bin/python   # both, alternated, one table

TensorFlow is not one of fercore's requirements (it is the peer, not a dependency): install it in a venv of its own,
`python3 -m venv /tmp/tf && /tmp/tf/bin/pip install tensorflow-cpu`. This file imports only TensorFlow and NumPy,
so that interpreter can run it. It prints one line, `keras_img_per_s <best rate>`, which bench_train.py reads.

The network is the homework's, layer for layer (fercore.models.hw3): conv64-BN-ReLU, conv64-ReLU, maxpool, dropout
0.25; conv128-BN-ReLU, conv128-ReLU, maxpool; dense128-BN-ReLU, dropout 0.5, dense7 softmax; Adam 1e-3, categorical
cross-entropy, Keras' BatchNormalization defaults.
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # no start-up banner on stdout's neighbour

import numpy as np  # noqa: E402


def homework_network(keras):
    layers = keras.layers
    conv = lambda filters: layers.Conv2D(filters, 3, padding="same")  # noqa: E731 -- Keras' defaults, as hw3
    return keras.Sequential([
        keras.Input((48, 48, 1)),
        conv(64), layers.BatchNormalization(), layers.Activation("relu"),
        conv(64), layers.Activation("relu"), layers.MaxPooling2D(2), layers.Dropout(0.25),
        conv(128), layers.BatchNormalization(), layers.Activation("relu"),
        conv(128), layers.Activation("relu"), layers.MaxPooling2D(2),
        layers.Flatten(),
        layers.Dense(128), layers.BatchNormalization(), layers.Activation("relu"), layers.Dropout(0.5),
        layers.Dense(7, activation="softmax"),
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5, help="training steps per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; the best counts")
    args = parser.parse_args()

    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    model = homework_network(tf.keras)
    model.compile(optimizer=tf.keras.optimizers.Adam(1e-3), loss="categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch, 48, 48, 1), dtype=np.float32)
    y = np.eye(7, dtype=np.float32)[rng.integers(0, 7, args.batch)]
    model.train_on_batch(x, y)  # warm-up: graph tracing and oneDNN's kernels
    best = 0.0
    for _ in range(args.rounds):
        started = time.perf_counter()
        for _ in range(args.steps):
            model.train_on_batch(x, y)
        best = max(best, args.batch * args.steps / (time.perf_counter() - started))
    print(f"keras_img_per_s {best:.1f}  (TensorFlow {tf.__version__}, {args.threads} threads, batch {args.batch})")


if __name__ == "__main__":
    main()
