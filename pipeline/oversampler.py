"""An imbalanced-learn over-sampler backed by the class-conditional GAN, for arrays in memory.

`GanOverSampler(...).fit_resample(X, y)` plans the images each class lacks (`pipeline.plan`),
trains the GAN on X (`pipeline.gan.train_gan`, its files in a temporary folder that is removed)
and appends the generated images (`pipeline.generate`); it works inside `imblearn.pipeline.Pipeline`.
"""

from __future__ import annotations

import math
import numbers
import tempfile
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from imblearn.over_sampling.base import BaseOverSampler
from imblearn.utils import check_target_type
from pydantic import ValidationError
from sklearn.base import _fit_context
from sklearn.preprocessing import label_binarize
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import validate_data

from pipeline import gan, gan_checkpoints
from pipeline.config import TrainGanConfig
from pipeline.data import ImageTable
from pipeline.device import choose_precision, select_device
from pipeline.generate import Sampler, generate
from pipeline.plan import STRING_STRATEGIES, plan_quota

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16")


class GanOverSampler(BaseOverSampler):
    """Over-sample image classes with a class-conditional GAN trained on the data being resampled.

    X holds images in one of three layouts, and X_resampled comes back in the same one (and dtype):
    `(n, H, W)` grayscale, `(n, H, W, C)` with C in {1, 3}, or flat `(n, H*W*C)` rows as sklearn
    classifiers take them, the pixels in row-major (H, W, C) order (`images.reshape(n, -1)`). A flat
    X is read as `image_shape`; without one, only a square grayscale image (n_features = side²,
    e.g. sklearn's 64-feature digits) is assumed. Sides must be 4..512.

    Pixel values must lie in `pixel_range` (default 0..255); they are mapped linearly onto the GAN's
    uint8 scale and the generated images mapped back (rounded for integer dtypes). The original
    rows come first in X_resampled, unchanged; the synthetic ones follow, class by class.

    The defaults are a quick setting (100 steps of a width-8 sngan) that runs in seconds on 8x8
    images; for useful images train longer: `augment`'s own runs use 2,000 steps (8x8 digits) to
    12,000 (28x28, with `width=16, aux_weight=1.5, gan_params={"ms_weight": 0.3}`).

    Args:
        sampling_strategy: as `augment plan` reads it (`pipeline.plan.plan_quota`): "auto",
            "minority", "not minority", "not majority", "all"; a float ratio in (0, 1] (every
            non-majority class brought to int(ratio * majority count), multi-class too); an int
            target count; a `{class label: target count}` mapping; or a callable(y) -> such a mapping.
        random_state: int, `np.random.RandomState` or None (numpy's global RNG). An int is the
            GAN's seed as `train_gan.seed` and `generate.seed` take it, so results repeat.
        image_shape: (H, W) or (H, W, C) of a flat X; None to read it from X (see above).
        pixel_range: (low, high) of X's pixel scale, e.g. (0, 16) for sklearn's digits, (0, 1) for floats.
        arch: a key of `pipeline.models.GAN_ARCHS` ("sngan", "dcgan", "concat").
        width: the GAN's base channel width.
        steps: GAN training steps.
        batch_size: GAN training batch size.
        z_dim: noise dimension.
        aux_weight: weight of the AC-GAN class head (0: none; sngan and dcgan only).
        diffaug: DiffAugment policy ("color,translation,cutout", "" for none).
        device: "auto" (CUDA if visible), "cpu" or "cuda"; training and sampling run there.
        precision: "fp32" (default: the same images on every machine), "bf16" or "auto" (bf16
            where the device has it and it is faster, as the CLI's default), for training and
            sampling both; bf16 moves a fraction of the pixels by a level or so.
        gan_params: any other `train_gan` setting by name (e.g. `{"lr_g": 1e-4, "n_dis": 2}`),
            validated like params.yaml's `train_gan` section.

    Attributes:
        sampling_strategy_: OrderedDict {class label: images added}, the classes that got any.
        classes_: the class labels seen in fit, sorted.
        image_shape_: (H, W, C) of the images the GAN was trained on.
        gan_meta_: the trained generator's metadata (as `pipeline.gan_checkpoints.load_generator` returns it).
        n_features_in_, feature_names_in_: as sklearn sets them.
    """

    _parameter_constraints: dict = {
        "sampling_strategy": [
            Interval(numbers.Real, 0, 1, closed="right"),
            Interval(numbers.Integral, 1, None, closed="left"),
            StrOptions(set(STRING_STRATEGIES)),
            Mapping,
            callable,
        ],
        "random_state": ["random_state"],
        "image_shape": [tuple, list, None],
        "pixel_range": [tuple, list],
        "arch": [str],
        "width": [Interval(numbers.Integral, 4, None, closed="left")],
        "steps": [Interval(numbers.Integral, 1, None, closed="left")],
        "batch_size": [Interval(numbers.Integral, 1, None, closed="left")],
        "z_dim": [Interval(numbers.Integral, 1, None, closed="left")],
        "aux_weight": [Interval(numbers.Real, 0, None, closed="left")],
        "diffaug": [str],
        "device": [StrOptions(set(DEVICES))],
        "precision": [StrOptions(set(PRECISIONS))],
        "gan_params": [dict, None],
    }

    def __init__(
        self,
        sampling_strategy="auto",
        random_state=None,
        image_shape: tuple[int, ...] | None = None,
        pixel_range: tuple[float, float] = (0, 255),
        arch: str = "sngan",
        width: int = 8,
        steps: int = 100,
        batch_size: int = 32,
        z_dim: int = 32,
        aux_weight: float = 0.0,
        diffaug: str = "color,translation,cutout",
        device: str = "auto",
        precision: str = "fp32",
        gan_params: dict | None = None,
    ):
        # sklearn convention: store the arguments as given; every check runs in fit
        super().__init__(sampling_strategy=sampling_strategy)
        self.random_state = random_state
        self.image_shape = image_shape
        self.pixel_range = pixel_range
        self.arch = arch
        self.width = width
        self.steps = steps
        self.batch_size = batch_size
        self.z_dim = z_dim
        self.aux_weight = aux_weight
        self.diffaug = diffaug
        self.device = device
        self.precision = precision
        self.gan_params = gan_params

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = False  # pixels are dense; scipy.sparse X is refused
        tags.input_tags.three_d_array = True
        return tags

    # ------------------------------------------------------------------------- public

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Check X and y and resolve `sampling_strategy_`; trains nothing (use `fit_resample`)."""
        X, y, _ = self._check_X_y(X, y)
        self._layout(X)
        self.sampling_strategy_ = self._quotas(y)
        return self

    @_fit_context(prefer_skip_nested_validation=True)
    def fit_resample(self, X, y):
        """Train the GAN on (X, y) and return X and y with the planned synthetic images appended.

        Args:
            X: images (n, H, W) / (n, H, W, C), or flat (n, H*W*C); a list or pandas DataFrame of
                flat rows is returned as the same type.
            y: class labels (n,) (a column vector or a one-hot matrix is accepted, as imblearn does).

        Returns:
            (X_resampled, y_resampled): the input rows, then the synthetic ones.

        Raises:
            ValueError: a bad parameter, image layout or pixel value, a single class, or a
                sampling strategy that does not fit the class counts.
        """
        check_classification_targets(y)
        X_in, y_in = X, y
        X, y, one_hot = self._check_X_y(X, y)
        self.sampling_strategy_ = self._quotas(y)
        X_res, y_res = self._fit_resample(X, y)
        if one_hot:
            y_res = label_binarize(y_res, classes=self.classes_)
        return _like(X_in, X_res), _like(y_in, y_res)

    # ------------------------------------------------------------------------- steps

    def _check_X_y(self, X, y, accept_sparse=None):
        y, one_hot = check_target_type(y, indicate_one_vs_all=True)
        X, y = validate_data(self, X=X, y=y, reset=True, accept_sparse=False, allow_nd=True)
        return X, y, one_hot

    def _quotas(self, y: np.ndarray) -> OrderedDict:
        """{label: n_to_add} for the labels that get images, from `pipeline.plan.plan_quota`."""
        self.classes_ = np.unique(y)
        if len(self.classes_) < 2:
            raise ValueError(f"y has a single class ({self.classes_[0]!r}); over-sampling needs at least 2 classes")
        names = [str(c) for c in self.classes_]
        if len(set(names)) < len(names):
            raise ValueError(f"class labels {list(self.classes_)} are not distinct as strings")
        counts = {n: int(k) for n, k in zip(names, np.unique(y, return_counts=True)[1])}
        strategy = self.sampling_strategy(y) if callable(self.sampling_strategy) else self.sampling_strategy
        if isinstance(strategy, Mapping):
            strategy = {str(k): int(v) if isinstance(v, numbers.Integral) and not isinstance(v, bool) else v
                        for k, v in strategy.items()}
        elif isinstance(strategy, numbers.Integral) and not isinstance(strategy, bool):
            strategy = int(strategy)
        elif isinstance(strategy, numbers.Real) and not isinstance(strategy, bool):
            strategy = float(strategy)
        quota = plan_quota(counts, strategy)
        return OrderedDict((c, quota[n]) for c, n in zip(self.classes_, names) if quota[n] > 0)

    def _layout(self, X: np.ndarray) -> tuple[int, int, int]:
        """(H, W, C) of the images in X, checked against `image_shape`; sets `image_shape_`."""
        given = _image_shape(self.image_shape)
        if X.ndim == 2:
            n = X.shape[1]
            if given is None:
                side = math.isqrt(n)
                if side * side != n:
                    raise ValueError(
                        f"X is flat with {n} features, not a square number of pixels; pass "
                        f"image_shape=(H, W) or (H, W, C) with H * W * C == {n} (pixels in (H, W, C) order)"
                    )
                given = (side, side, 1)
            if math.prod(given) != n:
                raise ValueError(f"image_shape {tuple(self.image_shape)} holds {math.prod(given)} pixels, "
                                 f"but X has {n} features")
            shape = given
        elif X.ndim in (3, 4):
            shape = tuple(X.shape[1:3]) + ((X.shape[3],) if X.ndim == 4 else (1,))
            if given is not None and given != shape:
                raise ValueError(f"image_shape {tuple(self.image_shape)} does not match X's images {X.shape[1:]}")
        else:
            raise ValueError(f"X must be images (n, H, W) or (n, H, W, C), or flat rows (n, H*W*C); got shape {X.shape}")
        h, w, c = shape
        if c not in (1, 3):
            raise ValueError(f"images must have 1 or 3 channels, got {c} (X's last axis is channels)")
        if not (4 <= h <= 512 and 4 <= w <= 512):
            raise ValueError(f"image sides must be in 4..512 for the GAN, got {h}x{w}")
        self.image_shape_ = shape
        return shape

    def _to_uint8(self, X: np.ndarray) -> np.ndarray:
        """X's pixels on the GAN's 0..255 scale, as uint8 (n, H, W, C)."""
        lo, hi = _pixel_range(self.pixel_range)
        shape = (len(X), *self.image_shape_)
        if X.dtype == np.uint8 and (lo, hi) == (0, 255):
            return np.ascontiguousarray(X).reshape(shape)
        x_min, x_max = (float(X.min()), float(X.max())) if X.size else (lo, hi)
        if x_min < lo or x_max > hi:
            raise ValueError(f"X's values span {x_min:g}..{x_max:g}, outside pixel_range ({lo:g}, {hi:g}); "
                             "set pixel_range to the scale of X's pixels")
        u8 = np.rint((X.astype(np.float64) - lo) * (255.0 / (hi - lo)))
        return u8.astype(np.uint8).reshape(shape)

    def _from_uint8(self, images: np.ndarray, like: np.ndarray) -> np.ndarray:
        """Generated uint8 (m, H, W, C) images back on X's scale, layout and dtype."""
        lo, hi = _pixel_range(self.pixel_range)
        if like.dtype == np.uint8 and (lo, hi) == (0, 255):
            out = images
        else:
            out = lo + images.astype(np.float64) * ((hi - lo) / 255.0)
            if np.issubdtype(like.dtype, np.integer):
                out = np.rint(out)
            out = out.astype(like.dtype)
        return out.reshape((len(images), *like.shape[1:]))

    def _gan_config(self, seed: int):
        """The `train_gan` section this sampler trains with."""
        # recipe none: this sampler's own parameters are the settings (no recipe fills them in)
        fields = dict(
            recipe="none", arch=self.arch, width=self.width, steps=self.steps, batch_size=self.batch_size,
            z_dim=self.z_dim, aux_weight=self.aux_weight, diffaug=self.diffaug, device=self.device,
            precision=self.precision, seed=seed, checkpoint_every=self.steps, sample_every=self.steps,
        )
        extra = dict(self.gan_params or {})
        own = sorted(set(extra) & (set(fields) - {"checkpoint_every", "sample_every"}))
        if own:
            raise ValueError(f"gan_params sets {', '.join(own)}: pass {'them' if len(own) > 1 else 'it'} "
                             "as GanOverSampler's own parameter (random_state for the seed)")
        fields |= extra
        try:
            return TrainGanConfig(**fields)
        except ValidationError as e:
            bad = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'train_gan'}: {err['msg']}" for err in e.errors())
            raise ValueError(f"GanOverSampler GAN settings: {bad}") from None

    def _fit_resample(self, X: np.ndarray, y: np.ndarray):
        self._layout(X)
        images = self._to_uint8(X)
        seed = _seed(self.random_state)
        cfg = self._gan_config(seed)
        if not self.sampling_strategy_:
            self.gan_meta_ = None
            return X.copy(), y.copy()
        labels = np.searchsorted(self.classes_, y)
        table = ImageTable(images, labels, tuple(str(c) for c in self.classes_))
        plan = {str(c): int(n) for c, n in self.sampling_strategy_.items()}
        device = select_device(cfg.device)
        # train_gan writes checkpoints, curves and sample grids: all into a folder removed on exit
        with tempfile.TemporaryDirectory(prefix="augment-gan-") as tmp:
            final = gan.train_gan(cfg, table, Path(tmp), progress=False)
            G, meta = gan_checkpoints.load_generator(final, device)
        self.gan_meta_ = meta
        new, new_labels, _, _ = generate(
            Sampler(G, meta, seed, device, choose_precision(cfg.precision, device)), plan, batch_size=256,
            progress=False,
        )
        X_res = np.concatenate([X, self._from_uint8(new, X)])
        y_res = np.concatenate([y, self.classes_[new_labels].astype(y.dtype, copy=False)])
        return X_res, y_res


def _image_shape(value) -> tuple[int, int, int] | None:
    """`image_shape` as (H, W, C), or None."""
    if value is None:
        return None
    shape = tuple(value)
    if len(shape) not in (2, 3) or not all(isinstance(v, numbers.Integral) and v > 0 for v in shape):
        raise ValueError(f"image_shape must be (H, W) or (H, W, C) of positive ints, got {value!r}")
    return tuple(int(v) for v in shape) + ((1,) if len(shape) == 2 else ())


def _pixel_range(value) -> tuple[float, float]:
    """`pixel_range` as (low, high) floats with low < high."""
    rng = tuple(value)
    if len(rng) != 2 or not all(isinstance(v, numbers.Real) and math.isfinite(v) for v in rng) or rng[0] >= rng[1]:
        raise ValueError(f"pixel_range must be (low, high) with low < high, got {value!r}")
    return float(rng[0]), float(rng[1])


def _seed(random_state) -> int:
    """An int seed for train_gan/generate: the int itself, or one drawn from the RandomState."""
    if isinstance(random_state, numbers.Integral):
        return int(random_state)
    return int(check_random_state(random_state).randint(np.iinfo(np.int32).max))


def _like(original, array: np.ndarray):
    """`array` as the container type of `original` (list, pandas DataFrame or Series, ndarray)."""
    if isinstance(original, list):
        return array.tolist()
    kind = type(original).__name__
    if kind == "DataFrame":
        frame = pd.DataFrame(array if array.ndim == 2 else array[:, None], columns=original.columns)
        return frame.astype(original.dtypes.to_dict())
    if kind == "Series":
        return pd.Series(array, name=original.name, dtype=original.dtype)
    return array
