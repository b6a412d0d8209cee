"""Unit tests of the table3-augmentation pieces: class subsets, the rates, the classifier and its convolution."""

import importlib.util
import pathlib

import haiku as hk
import jax
import numpy as np
import pytest

from mcmcvae import nets

RUNNER = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "run.py"


def _load_runner():
    """The research scripts' runner, loaded by path (the experiments live outside the library)."""
    spec = importlib.util.spec_from_file_location("experiments_run", RUNNER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


runner = _load_runner()
t3 = runner.load("table3-augmentation")


def _labelled_images(per_class=600, num_classes=10):
    """Fashion-MNIST-like labels (each class ``per_class`` times, shuffled) and images that record their index."""
    labels = np.random.default_rng(0).permutation(np.repeat(np.arange(num_classes), per_class))
    images = np.arange(len(labels), dtype=np.float32).reshape(-1, 1, 1, 1) * np.ones((1, 28, 28, 1), np.float32)
    return images, labels


# ------------------------------------------------------------------------------------------------ subsets
@pytest.mark.parametrize("budget", sorted(t3.BUDGETS))
def test_every_budget_trains_on_a_one_to_three_subset_of_two_classes(budget):
    settings = t3.BUDGETS[budget]
    images, labels = _labelled_images(per_class=6000)  # as many as Fashion-MNIST's training split holds
    counts = {t3.MAJORITY_LABEL: settings["num_majority"], t3.MINORITY_LABEL: settings["num_minority"]}
    x, y = t3.class_subset(images, labels, counts)
    assert set(np.unique(y).tolist()) == {0, 6}
    assert np.sum(y == 0) == 3 * np.sum(y == 6) == settings["num_majority"]
    index = x[:, 0, 0, 0].astype(int)
    assert len(np.unique(index)) == len(index)  # no image twice
    np.testing.assert_array_equal(labels[index], y)  # each image comes with its own label
    binary = t3.binary_labels(y)
    assert binary.dtype == np.int32 and np.array_equal(binary, (y == 6).astype(np.int32))


def test_class_subset_is_fixed_by_its_seed_and_none_keeps_a_class_whole():
    images, labels = _labelled_images()
    first = t3.class_subset(images, labels, {0: 30, 6: 10}, seed=1)[0]
    again = t3.class_subset(images, labels, {0: 30, 6: 10}, seed=1)[0]
    other = t3.class_subset(images, labels, {0: 30, 6: 10}, seed=2)[0]
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    # A class's draw depends on its own count only: asking for more T-shirts leaves the shirts unchanged.
    x_more, y_more = t3.class_subset(images, labels, {0: 300, 6: 10}, seed=1)
    x_less, y_less = t3.class_subset(images, labels, {0: 30, 6: 10}, seed=1)
    np.testing.assert_array_equal(x_more[y_more == 6], x_less[y_less == 6])
    x_all, y_all = t3.class_subset(images, labels, {0: None, 6: None})
    assert np.sum(y_all == 0) == np.sum(y_all == 6) == 600


def test_class_subset_and_binary_labels_reject_bad_input():
    images, labels = _labelled_images()
    with pytest.raises(ValueError, match="there are 600"):
        t3.class_subset(images, labels, {6: 601})
    with pytest.raises(ValueError, match="whole number"):
        t3.class_subset(images, labels, {6: 0})
    with pytest.raises(ValueError, match="no images with label 11"):
        t3.class_subset(images, labels, {11: 5})
    with pytest.raises(ValueError, match="one label per image"):
        t3.class_subset(images, labels[:-1], {6: 5})
    with pytest.raises(ValueError, match="counts is empty"):
        t3.class_subset(images, labels, {})
    with pytest.raises(ValueError, match=r"labels \[3\]"):
        t3.binary_labels([0, 6, 3])


# ------------------------------------------------------------------------------------------------ metrics
def test_binary_metrics_match_a_hand_computed_confusion_matrix():
    # TP = 3, FN = 1, TN = 4, FP = 2, in a shuffled order
    labels = np.array([1, 0, 1, 0, 0, 1, 0, 1, 0, 0])
    predictions = np.array([1, 0, 0, 1, 0, 1, 0, 1, 1, 0])
    metrics = t3.binary_metrics(labels, predictions)
    assert metrics["confusion"] == [[4, 2], [1, 3]]
    assert metrics["tpr"] == pytest.approx(3 / 4)
    assert metrics["tnr"] == pytest.approx(4 / 6)
    assert metrics["balanced_accuracy"] == pytest.approx((3 / 4 + 4 / 6) / 2)
    # Predicting the majority everywhere: accuracy 0.8 but balanced accuracy 0.5.
    majority = t3.binary_metrics([0, 0, 0, 0, 1], [0, 0, 0, 0, 0])
    assert (majority["tpr"], majority["tnr"], majority["balanced_accuracy"]) == (0.0, 1.0, 0.5)


def test_binary_metrics_reject_bad_input():
    with pytest.raises(ValueError, match="both classes"):
        t3.binary_metrics([1, 1, 1], [1, 0, 1])
    with pytest.raises(ValueError, match="must be 0 or 1"):
        t3.binary_metrics([0, 1, 2], [0, 1, 1])
    with pytest.raises(ValueError, match="one length"):
        t3.binary_metrics([0, 1, 1], [0, 1])


# --------------------------------------------------------------------------------------------- classifier
@pytest.mark.parametrize("stride", [1, 2])
def test_conv3x3_is_a_zero_padded_convolution(stride):
    x = jax.random.normal(jax.random.key(0), (2, 7, 8, 3))
    net = hk.transform(lambda x: nets.conv3x3(x, 5, stride=stride, name="conv"))
    params = net.init(jax.random.key(1), x)
    w, b = params["conv"]["w"], params["conv"]["b"]
    expected = jax.lax.conv_general_dilated(x, w.reshape(3, 3, 3, 5), (stride, stride), ((1, 1), (1, 1)),
                                            dimension_numbers=("NHWC", "HWIO", "NHWC")) + b
    np.testing.assert_allclose(net.apply(params, None, x), expected, rtol=1e-5, atol=1e-5)
    assert expected.shape == (2, 7 if stride == 1 else 4, 8 if stride == 1 else 4, 5)


def _toy_problem(key, n):
    """Class 1 is bright in the top half, class 0 in the bottom half, both under uniform noise."""
    k_label, k_noise = jax.random.split(key)
    labels = np.asarray(jax.random.bernoulli(k_label, 0.3, (n,))).astype(np.int32)
    top = (np.arange(28) < 14).astype(np.float32)[None, :, None, None]
    signal = np.where(labels[:, None, None, None] == 1, top, 1.0 - top) * 0.5
    images = signal + 0.5 * np.asarray(jax.random.uniform(k_noise, (n, 28, 28, 1)))
    return images.astype(np.float32), labels


def test_classifier_learns_a_separable_problem_in_one_compiled_epoch():
    train_images, train_labels = _toy_problem(jax.random.key(0), 300)
    test_images, test_labels = _toy_problem(jax.random.key(1), 200)
    trainer = t3.ClassifierTrainer(capacity=300)
    params, losses = trainer.run(jax.random.key(2), train_images, train_labels, num_epochs=4)
    metrics = t3.binary_metrics(test_labels, trainer.predict(params, test_images, batch_size=64))
    assert metrics["balanced_accuracy"] > 0.95, metrics
    assert losses.shape == (4,) and losses[-1] < losses[0]
    # A smaller set reuses the compiled epoch: its size is a traced argument.
    trainer.run(jax.random.key(3), train_images[:250], train_labels[:250], num_epochs=1)
    assert trainer.trace_count == 1


def test_classifier_rejects_bad_input():
    with pytest.raises(ValueError, match="at least one batch"):
        t3.ClassifierTrainer(capacity=50, batch_size=100)
    trainer = t3.ClassifierTrainer(capacity=200)
    images, labels = _toy_problem(jax.random.key(0), 300)
    with pytest.raises(ValueError, match="larger capacity"):
        trainer.run(jax.random.key(0), images, labels, num_epochs=1)
    with pytest.raises(ValueError, match="zeros and ones"):
        trainer.run(jax.random.key(0), images[:200], labels[:200] + 1, num_epochs=1)
    with pytest.raises(ValueError, match=r"shape \(n, 28, 28, 1\)"):
        trainer.run(jax.random.key(0), images[:200, :14], labels[:200], num_epochs=1)
    with pytest.raises(ValueError, match="num_classes"):
        t3.make_classifier(1)
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        t3.make_classifier(2, activation="swish")


# --------------------------------------------------------------------------------------------- experiment
def test_unknown_budget_names_the_valid_ones():
    assert set(t3.BUDGETS) == {"full", "cpu", "quick"}
    with pytest.raises(ValueError, match="unknown budget 'huge'; choose one of full, cpu, quick"):
        runner.run("table3-augmentation", budget="huge")
    # its old name is refused with the new one: a paper-like schedule on stand-in data is not the paper's protocol
    with pytest.raises(ValueError, match="budget 'paper' was renamed 'full': .*not the paper's protocol; run "
                                         "--budget full"):
        runner.run("table3-augmentation", budget="paper")
