"""Small TensorFlow models of the kinds TF-TRT users convert, for the end-to-end tests:

* ``gru_savedmodel``, ``gru.h5``: two stacked Keras 3 GRUs (``reset_after=False``) and a Dense;
* ``combined_nms``, ``single_nms``: a small conv backbone, then
  ``tf.image.combined_non_max_suppression`` / ``tf.image.non_max_suppression``;
* ``string_input``: ``tf.strings.to_number`` before a convolution;
* ``hash_table``: a ``StaticHashTable`` lookup, then an embedding and dense layers;
* ``vocabulary_table``: a ``StaticVocabularyTable`` lookup (its out-of-vocabulary buckets hash
  with ``StringToHashBucketFast``, which tf2onnx has no lowering for).

``python tests/tf_models.py OUT`` writes them into OUT (in a process of its own: the tests that
use them do not import TensorFlow).
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

#: Names of the models written, each a SavedModel folder or a file in OUT.
MODELS = ("gru_savedmodel", "gru.h5", "combined_nms", "single_nms", "string_input", "hash_table",
          "vocabulary_table")

#: Vocabulary of the table model: its keys, and one word that is not in it.
VOCABULARY = ("red", "green", "blue", "cyan")


def main(out: str) -> None:
    import keras
    import numpy as np
    import tensorflow as tf

    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(0)

    sequence = keras.Input((6, 4), name="seq")
    hidden = keras.layers.GRU(8, return_sequences=True, reset_after=False)(sequence)
    hidden = keras.layers.GRU(8, reset_after=False)(hidden)
    gru = keras.Model(sequence, keras.layers.Dense(3, name="logits")(hidden))
    gru.export(os.path.join(out, "gru_savedmodel"), verbose=False)
    gru.save(os.path.join(out, "gru.h5"))

    first = tf.constant(rng.standard_normal((3, 3, 3, 8)).astype(np.float32) * 0.3)
    second = tf.constant(rng.standard_normal((3, 3, 8, 8)).astype(np.float32) * 0.3)

    def boxes_and_scores(image):
        features = tf.nn.relu(tf.nn.conv2d(image, first, 1, "SAME"))
        features = tf.reshape(tf.nn.conv2d(features, second, 2, "SAME"), [1, 64, 8])
        centers = tf.sigmoid(features[:, :, :2])
        sizes = 0.1 * tf.sigmoid(features[:, :, 2:4])
        return tf.concat([centers - sizes, centers + sizes], axis=-1), tf.sigmoid(features[:, :, 4:])

    image_spec = tf.TensorSpec([1, 16, 16, 3], tf.float32, name="image")

    class CombinedNms(tf.Module):
        @tf.function(input_signature=[image_spec])
        def __call__(self, image):
            boxes, scores = boxes_and_scores(image)
            result = tf.image.combined_non_max_suppression(
                boxes[:, :, None, :], scores, 10, 10, 0.5, 0.0, clip_boxes=False)
            return {"boxes": result.nmsed_boxes, "scores": result.nmsed_scores}

    class SingleNms(tf.Module):
        @tf.function(input_signature=[image_spec])
        def __call__(self, image):
            boxes, scores = boxes_and_scores(image)
            kept = tf.image.non_max_suppression(boxes[0], scores[0, :, 0], 10, 0.5)
            return {"boxes": tf.gather(boxes[0], kept), "scores": tf.gather(scores[0, :, 0], kept)}

    class StringInput(tf.Module):
        def __init__(self):
            self.kernel = tf.Variable(rng.standard_normal((3, 3, 1, 4)).astype(np.float32))

        @tf.function(input_signature=[tf.TensorSpec([1, 8, 8], tf.string, name="text")])
        def __call__(self, text):
            values = tf.strings.to_number(text, tf.float32)[..., None]
            return {"features": tf.nn.relu(tf.nn.conv2d(values, self.kernel, 1, "SAME"))}

    class HashTable(tf.Module):
        def __init__(self):
            self.ids = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
                tf.constant(list(VOCABULARY)), tf.range(1, len(VOCABULARY) + 1, dtype=tf.int64)),
                default_value=0)
            self.embedding = tf.Variable(rng.standard_normal((len(VOCABULARY) + 1, 8))
                                         .astype(np.float32))
            self.dense = tf.Variable(rng.standard_normal((8, 4)).astype(np.float32))

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="words")])
        def __call__(self, words):
            vectors = tf.gather(self.embedding, self.ids.lookup(words))
            hidden = tf.nn.relu(tf.matmul(vectors, self.dense))
            return {"scores": tf.nn.softmax(tf.matmul(hidden, tf.transpose(self.dense)) + 1.0)}

    class VocabularyTable(tf.Module):
        def __init__(self):
            self.table = tf.lookup.StaticVocabularyTable(tf.lookup.KeyValueTensorInitializer(
                tf.constant(list(VOCABULARY)), tf.range(len(VOCABULARY), dtype=tf.int64)),
                num_oov_buckets=1)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="words")])
        def __call__(self, words):
            return {"ids": self.table.lookup(words) * 2}

    for name, module in (("combined_nms", CombinedNms()), ("single_nms", SingleNms()),
                         ("string_input", StringInput()), ("hash_table", HashTable()),
                         ("vocabulary_table", VocabularyTable())):
        tf.saved_model.save(module, os.path.join(out, name), signatures=module.__call__)


if __name__ == "__main__":
    main(sys.argv[1])
