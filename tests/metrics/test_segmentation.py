"""Segmentation consistency: scores by hand, the U-Net's shapes, the loss, training on toy slices, files."""

import math

import pytest
import torch

from medsynth.metrics.segmentation import (SegmenterRecipe, class_weights, confusion, per_class_scores, predict,
                                          soft_dice_loss, summarize, train_segmenter)
from medsynth.models.segmenter import DEFAULT_CHANNELS, UNetSegmenter, load_segmenter, save_segmenter
from medsynth.io.checkpoint import save_checkpoint

CPU = torch.device("cpu")
NAMES = ["background", "outer", "inner"]
TOY_LEVELS = torch.tensor([-1.0, 0.0, 0.6])  # the intensities toy_slices gives classes 0, 1, 2
STEPS = 60


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # These networks are tiny: a second thread buys little, and on a shared
    # 2-core machine OpenMP threads spin-waiting on each other cost 10x.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def toy_data(make_toy_slices):
    """Training slices and held-out ones (another seed: other disc positions and noise)."""
    return make_toy_slices(n=24, size=32, seed=0), make_toy_slices(n=16, size=32, seed=5)


_TRAINED: dict[str, UNetSegmenter] = {}


@pytest.fixture
def trained(toy_data) -> UNetSegmenter:
    # Trained once and shared: make_toy_slices is function-scoped, so a module-scoped fixture cannot use it.
    if "model" not in _TRAINED:
        train, _ = toy_data
        _TRAINED["model"] = train_segmenter(train.images, train.labels, 3, SegmenterRecipe(steps=STEPS, seed=0), CPU)
    return _TRAINED["model"]


def foreground_dice(model, images, labels) -> float:
    rows = summarize(confusion(predict(model, images), labels, 3), NAMES)
    assert rows[-1]["class"] == "mean (organs)"
    return rows[-1]["dice"]


# --------------------------------------------------------------------------- scores


def hand_example() -> tuple[torch.Tensor, torch.Tensor]:
    """Four classes; class 3 appears in neither prediction nor target."""
    target = torch.zeros(2, 4, 4, dtype=torch.long)
    pred = torch.zeros(2, 4, 4, dtype=torch.long)
    target[0, 0:2, 2:4] = 1  # 4 pixels of class 1
    target[0, 3, 0:2] = 2  # 2 pixels of class 2 ...
    target[1, 1:3, 1:3] = 2  # ... and 4 more
    pred[0, 0, 1:4] = 1  # (0,0,1) is a false positive, (0,0,2) and (0,0,3) are hits
    pred[0, 1, 2] = 1  # hit; (0,1,3) is missed (predicted background)
    pred[0, 3, 0] = 2  # hit; (0,3,1) is missed
    pred[1, 1:3, 1:3] = 2  # 4 hits
    pred[1, 0, 0] = 2  # false positive
    return pred, target


def test_confusion_and_scores_match_hand_counts():
    pred, target = hand_example()
    conf = confusion(pred, target, num_classes=4)
    # rows = target, columns = prediction
    expected = torch.tensor([[20, 1, 1, 0], [1, 3, 0, 0], [1, 0, 5, 0], [0, 0, 0, 0]])
    assert conf.dtype == torch.int64
    assert torch.equal(conf, expected)

    scores = per_class_scores(conf)
    # class 0: tp 20, fp 2, fn 2; class 1: tp 3, fp 1, fn 1; class 2: tp 5, fp 1, fn 1
    want_dice = [40 / 44, 6 / 8, 10 / 12]
    want_iou = [20 / 24, 3 / 5, 5 / 7]
    assert scores["dice"][:3] == pytest.approx(want_dice, rel=1e-12)
    assert scores["iou"][:3] == pytest.approx(want_iou, rel=1e-12)
    assert math.isnan(scores["dice"][3]) and math.isnan(scores["iou"][3])

    rows = summarize(conf, NAMES + ["absent"])
    assert [r["class"] for r in rows] == NAMES + ["absent", "mean (organs)"]
    assert [r["voxels"] for r in rows] == [22, 4, 6, 0, 10]
    # the absent class is left out of the mean, and so is background
    assert rows[-1]["dice"] == pytest.approx((6 / 8 + 10 / 12) / 2, rel=1e-12)
    assert rows[-1]["iou"] == pytest.approx((3 / 5 + 5 / 7) / 2, rel=1e-12)
    assert rows[-1]["note"] == "organ mean over outer, inner (background and body left out)"


def test_the_organ_mean_leaves_the_body_out():
    """A segmenter perfect on the (large, easy) body and poor on the organs: the mean must read poor."""
    names = ["background", "body", "liver", "kidney"]
    conf = torch.zeros(4, 4, dtype=torch.long)
    conf[0, 0], conf[1, 1] = 5000, 3000  # background and body: all right
    conf[2, 2], conf[2, 1] = 10, 90  # liver: mostly called body (Dice 20 / 110)
    conf[3, 3], conf[3, 1] = 5, 45  # kidney: the same (Dice 10 / 55)
    rows = summarize(conf, names)
    assert rows[1]["dice"] < 1 and rows[1]["dice"] > 0.95  # body: its false positives barely show
    assert rows[-1]["class"] == "mean (organs)" and rows[-1]["dice"] == pytest.approx((20 / 110 + 10 / 55) / 2)
    assert rows[-1]["voxels"] == 150 and "liver, kidney" in rows[-1]["note"] and "body left out" in rows[-1]["note"]


def test_perfect_and_false_positive_only_classes():
    _, target = hand_example()
    scores = per_class_scores(confusion(target, target, num_classes=4))
    assert scores["dice"][:3] == [1.0, 1.0, 1.0] and scores["iou"][:3] == [1.0, 1.0, 1.0]
    assert math.isnan(scores["dice"][3])

    # a class that is only predicted, never present, is an error (0), not "no score" (NaN)
    pred = target.clone()
    pred[0, 0, 0] = 3
    assert per_class_scores(confusion(pred, target, num_classes=4))["dice"][3] == 0.0


def test_a_class_the_labels_lack_is_not_scored_even_where_predicted():
    """A perfect liver and one stray kidney pixel where the labels have no kidney: the organ mean is the
    liver's 1.0 (the kidney scored 0 made it 0.5), the kidney row NaN saying why."""
    names = ["background", "body", "liver", "kidney"]
    target = torch.zeros(1, 8, 8, dtype=torch.long)
    target[0, 1:7, 1:7] = 1
    target[0, 2:5, 2:5] = 2
    pred = target.clone()
    pred[0, 6, 6] = 3
    rows = {r["class"]: r for r in summarize(confusion(pred, target, 4), names)}
    assert math.isnan(rows["kidney"]["dice"]) and math.isnan(rows["kidney"]["iou"])
    assert rows["kidney"]["note"] == "not scored: no test label has it (the segmenter marks 1 pixel(s) of it)"
    mean = rows["mean (organs)"]
    assert mean["dice"] == mean["iou"] == 1.0 and mean["note"] == "organ mean over liver (background and body left out)"


def test_scores_reject_bad_arguments():
    pred, target = hand_example()
    with pytest.raises(ValueError, match="target holds class ids 0..2"):
        confusion(pred.clamp(max=1), target, num_classes=2)
    with pytest.raises(ValueError, match="same shape"):
        confusion(pred[:1], target, num_classes=4)
    with pytest.raises(ValueError, match="class_names has 3 names"):
        summarize(confusion(pred, target, num_classes=4), NAMES)


# --------------------------------------------------------------------------- loss


def confident_logits(classes: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Logits (N, C, H, W) that put nearly all probability on ``classes`` (N, H, W)."""
    return 20.0 * torch.nn.functional.one_hot(classes, num_classes).permute(0, 3, 1, 2).float()


def test_soft_dice_counts_only_foreground_classes_present_in_the_batch():
    target = torch.zeros(2, 8, 8, dtype=torch.long)
    target[:, 2:4, 2:4] = 1  # class 2 is absent from the batch
    # a perfect prediction is perfect, however many classes are absent
    assert float(soft_dice_loss(confident_logits(target, 3), target)) == pytest.approx(0.0, abs=1e-3)
    # missing the only organ costs the whole loss; right background does not soften it
    assert float(soft_dice_loss(confident_logits(torch.zeros_like(target), 3), target)) > 0.85
    # class 1 right, class 2 (absent) predicted on half the background: only class 1 counts
    pred = target.clone()
    pred[:, 5:, :] = 2
    assert float(soft_dice_loss(confident_logits(pred, 3), target)) == pytest.approx(0.0, abs=1e-3)


def test_soft_dice_of_a_background_only_batch_is_zero_and_differentiable():
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    loss = soft_dice_loss(logits, torch.zeros(2, 4, 4, dtype=torch.long))
    loss.backward()
    assert float(loss.detach()) == 0.0 and logits.grad is not None


def test_class_weights_follow_frequency_to_the_power():
    labels = torch.tensor([[[0, 0, 0, 0], [0, 0, 1, 1]]], dtype=torch.uint8)  # frequencies 3/4, 1/4, class 2 absent
    w = class_weights(labels, 3, power=0.5)
    assert float(w[1] / w[0]) == pytest.approx(3**0.5, rel=1e-6)  # (1/4) ** -0.5 / (3/4) ** -0.5
    assert float(0.75 * w[0] + 0.25 * w[1]) == pytest.approx(1.0, rel=1e-6)  # mean 1 over the pixels
    assert float(w[2]) > 0  # absent: never a target, but a valid weight
    assert torch.equal(class_weights(labels, 3, power=0.0), torch.ones(3))
    # counted in chunks: the same weights however the slices are grouped
    many = labels.repeat(5, 1, 1)
    many[3, 0, 0] = 2
    assert torch.allclose(class_weights(many, 3, 0.5, chunk=2), class_weights(many, 3, 0.5, chunk=64))


# --------------------------------------------------------------------------- network


def test_unet_output_shape_and_size_check():
    model = UNetSegmenter(num_classes=5).eval()
    assert model(torch.zeros(2, 1, 32, 32)).shape == (2, 5, 32, 32)
    assert UNetSegmenter(3, channels=(4, 8)).eval()(torch.zeros(1, 1, 30, 30)).shape == (1, 3, 30, 30)
    with pytest.raises(ValueError, match="30"):
        model(torch.zeros(2, 1, 30, 32))
    with pytest.raises(ValueError, match="30"):
        model(torch.zeros(2, 1, 32, 30))


def test_train_rejects_mismatched_inputs(make_toy_slices):
    s = make_toy_slices(n=4, size=32)
    with pytest.raises(ValueError, match="outside 0..1"):
        train_segmenter(s.images, s.labels, 2, SegmenterRecipe(steps=1), CPU)
    with pytest.raises(ValueError, match="do not match"):
        train_segmenter(s.images[:3], s.labels, 3, SegmenterRecipe(steps=1), CPU)
    with pytest.raises(ValueError, match="30x30"):
        train_segmenter(s.images[..., :30, :30], s.labels[..., :30, :30], 3, SegmenterRecipe(steps=1), CPU)


# --------------------------------------------------------------------------- training


def test_training_learns_the_toy_classes(trained, toy_data):
    _, test = toy_data
    untrained = train_segmenter(test.images, test.labels, 3, SegmenterRecipe(steps=0, seed=0), CPU)
    good = foreground_dice(trained, test.images, test.labels)
    bad = foreground_dice(untrained, test.images, test.labels)
    assert good > 0.8
    assert bad < good - 0.4


def test_training_is_deterministic_given_the_seed(toy_data):
    train, _ = toy_data

    def weights(seed: int) -> list[torch.Tensor]:
        model = train_segmenter(train.images, train.labels, 3, SegmenterRecipe(steps=15, seed=seed), CPU)
        return list(model.state_dict().values())

    a, b, other = weights(0), weights(0), weights(1)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, other))

    # the seed is private: the caller's random stream goes on as if training had not happened
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train_segmenter(train.images, train.labels, 3, SegmenterRecipe(steps=1, seed=7), CPU)
    assert torch.equal(torch.rand(3), expected)


def test_swapped_contrast_scores_below_real_images(trained, toy_data):
    """The consistency idea: 'generated' images with the organ contrasts swapped are segmented worse."""
    _, test = toy_data
    labels = test.labels.long()
    noise = test.images.float() - TOY_LEVELS[labels][:, None]
    swapped = TOY_LEVELS[[0, 2, 1]][labels][:, None] + noise  # class 1 bright, class 2 dark
    real = foreground_dice(trained, test.images, test.labels)
    fake = foreground_dice(trained, swapped, test.labels)
    assert fake < real - 0.2


def rare_dot_slices(n: int, size: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A large disc (class 1) and, in every other slice, a 3 x 3 dot (class 2, 0.4 brighter) inside it.

    The dot is ~0.4% of the pixels: unweighted cross-entropy gains more by calling it disc.
    """
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    labels = torch.zeros(n, size, size, dtype=torch.long)
    for i in range(n):
        cx, cy = torch.randint(size // 3, 2 * size // 3, (2,), generator=g).tolist()
        labels[i][(xx - cx) ** 2 + (yy - cy) ** 2 < (size // 3) ** 2] = 1
        if i % 2 == 0:
            dx, dy = torch.randint(-3, 4, (2,), generator=g).tolist()
            labels[i][((xx - cx - dx).abs() <= 1) & ((yy - cy - dy).abs() <= 1)] = 2
    images = torch.tensor([-1.0, 0.0, 0.4])[labels][:, None] + 0.1 * torch.randn(n, 1, size, size, generator=g)
    return images.clamp(-1, 1), labels


def sided_slices(n: int, size: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two alike discs (same size and intensity): the left one is class 1, the right one class 2.

    Only the side tells them apart, as it tells liver from spleen.
    """
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    labels = torch.zeros(n, size, size, dtype=torch.long)
    for i in range(n):
        cy = int(torch.randint(10, 22, (1,), generator=g))
        left, right = int(torch.randint(6, 11, (1,), generator=g)), int(torch.randint(21, 26, (1,), generator=g))
        labels[i][(xx - left) ** 2 + (yy - cy) ** 2 < 16] = 1
        labels[i][(xx - right) ** 2 + (yy - cy) ** 2 < 16] = 2
    images = torch.tensor([-1.0, 0.3, 0.3])[labels][:, None] + 0.05 * torch.randn(n, 1, size, size, generator=g)
    return images.clamp(-1, 1), labels


def class_dice(model, images, labels) -> list[float]:
    return [r["dice"] for r in summarize(confusion(predict(model, images), labels, 3), NAMES)[1:3]]


def test_a_rare_small_class_is_learnt_thanks_to_the_class_weights():
    (x, y), (x_test, y_test) = rare_dot_slices(24, seed=0), rare_dot_slices(16, seed=5)
    weighted = train_segmenter(x, y, 3, SegmenterRecipe(steps=STEPS, seed=0), CPU)
    plain = train_segmenter(x, y, 3, SegmenterRecipe(steps=STEPS, seed=0, class_weight_power=0.0), CPU)
    disc, dot = class_dice(weighted, x_test, y_test)
    assert disc > 0.9 and dot > 0.6
    # unweighted cross-entropy (as the segmenter had before) misses the dot in as many steps
    assert class_dice(plain, x_test, y_test)[1] < dot - 0.4


def test_flips_would_confuse_classes_told_apart_by_their_side():
    (x, y), (x_test, y_test) = sided_slices(24, seed=0), sided_slices(16, seed=5)
    kept = train_segmenter(x, y, 3, SegmenterRecipe(steps=STEPS, seed=0), CPU)
    flipped = train_segmenter(x, y, 3, SegmenterRecipe(steps=STEPS, seed=0, flips=True), CPU)
    assert min(class_dice(kept, x_test, y_test)) > 0.9
    assert max(class_dice(flipped, x_test, y_test)) < 0.7


def test_sample_weights_choose_which_slices_training_sees(toy_data):
    """Half the set has its labels wiped: weights on the good half learn the classes, on the wiped half nothing."""
    (train, _), n = toy_data, toy_data[0].images.shape[0]
    images = torch.cat([train.images, train.images])
    labels = torch.cat([train.labels, torch.zeros_like(train.labels)])
    good = torch.cat([torch.ones(n), torch.zeros(n)]).double()
    on_good = train_segmenter(images, labels, 3, SegmenterRecipe(steps=STEPS, seed=0), CPU, sample_weights=good)
    on_wiped = train_segmenter(images, labels, 3, SegmenterRecipe(steps=STEPS, seed=0), CPU, 1 - good)
    assert foreground_dice(on_good, train.images, train.labels) > 0.8
    assert foreground_dice(on_wiped, train.images, train.labels) < 0.1
    with pytest.raises(ValueError, match="sample_weights"):
        train_segmenter(images, labels, 3, SegmenterRecipe(steps=1), CPU, sample_weights=good[:3])


def test_a_recipe_refuses_bad_settings_naming_them():
    for bad, word in (({"steps": -1}, "steps"), ({"batch_size": 0}, "batch_size"),
                      ({"lr_schedule": "cosine"}, "lr_schedule"), ({"class_weight_power": -1.0}, "class_weight_power")):
        with pytest.raises(ValueError, match=word):
            SegmenterRecipe(**{"steps": 1, **bad})


def test_the_recipe_of_a_config_is_its_segmenter_keys():
    """The segmenter rule and the utility curve both build theirs from these keys: one recipe, so the curve
    may take the rule's model for its own point with every real patient."""
    recipe = SegmenterRecipe.from_settings({"segmenter_steps": 300, "segmenter_batch": 4,
                                            "segmenter_channels": [8, 16, 32]})
    assert recipe == SegmenterRecipe(steps=300, batch_size=4, channels=(8, 16, 32), seed=0)
    assert SegmenterRecipe.from_settings({"segmenter_steps": 1, "segmenter_batch": 2, "segmenter_channels": [4]},
                                         seed=3).seed == 3


# --------------------------------------------------------------------------- files


def test_save_load_round_trip(trained, toy_data, tmp_path):
    _, test = toy_data
    path = save_segmenter(trained, tmp_path / "seg.pt", num_classes=3, channels=DEFAULT_CHANNELS, class_names=NAMES)
    loaded, names = load_segmenter(path, CPU)
    assert not loaded.training and names == tuple(NAMES)
    assert torch.equal(predict(loaded, test.images), predict(trained, test.images))
    with torch.no_grad():
        assert torch.equal(loaded(test.images[:4].float()), trained(test.images[:4].float()))
    assert trained.class_seen == loaded.class_seen == [True, True, True]


def test_the_segmenter_remembers_the_classes_no_training_slice_had(toy_data, tmp_path):
    """A class absent from the real training slices (a rare TotalSegmentator class) is one the segmenter cannot
    find: it says so, and so does its file; one drawn with weight 0 was never seen either. Files written
    before the record read None (unknown)."""
    train, _ = toy_data
    labels = train.labels.clone()
    labels[labels == 2] = 1  # no slice has class 2
    model = train_segmenter(train.images, labels, 3, SegmenterRecipe(steps=1, seed=0), CPU)
    assert model.class_seen == [True, True, False]
    save_segmenter(model, tmp_path / "seg.pt", 3, DEFAULT_CHANNELS, NAMES)
    assert load_segmenter(tmp_path / "seg.pt", CPU)[0].class_seen == [True, True, False]
    labels[:4] = train.labels[:4]  # class 2 in the first four slices only, which are never drawn
    weights = torch.ones(len(labels))
    weights[:4] = 0
    assert train_segmenter(train.images, labels, 3, SegmenterRecipe(steps=1, seed=0), CPU,
                           sample_weights=weights).class_seen == [True, True, False]
    payload = torch.load(tmp_path / "seg.pt", weights_only=False)
    payload.pop("class_seen")
    old = save_checkpoint(tmp_path / "old.pt", payload)
    assert load_segmenter(old, CPU)[0].class_seen is None


def test_load_rejects_other_checkpoints_and_segmenters_without_class_names(tmp_path):
    path = save_checkpoint(tmp_path / "generator.pt", {"kind": "generator", "state": {}})
    with pytest.raises(ValueError, match="generator.pt"):
        load_segmenter(path, CPU)
    with pytest.raises(ValueError, match="num_classes=4"):
        save_segmenter(UNetSegmenter(3), tmp_path / "x.pt", num_classes=4, channels=DEFAULT_CHANNELS,
                       class_names=NAMES + ["x"])
    with pytest.raises(ValueError, match="2 class names for a 3-class"):
        save_segmenter(UNetSegmenter(3), tmp_path / "x.pt", num_classes=3, channels=DEFAULT_CHANNELS,
                       class_names=NAMES[:2])
    model = UNetSegmenter(3)
    old = save_checkpoint(tmp_path / "old.pt", {"kind": "segmenter", "state": model.state_dict(), "num_classes": 3,
                                                "channels": list(DEFAULT_CHANNELS)})
    with pytest.raises(ValueError, match="old.pt: the segmenter does not name its classes.*rerun the segmenter rule"):
        load_segmenter(old, CPU)
