"""The Python API: ingest a log, fit any model, recommend with original ids, save and load.

    import recvae
    data = recvae.ingest("events.parquet")   # or a Polars/pandas/Arrow frame, or a CSR matrix
    model = recvae.MultVAE(epochs=50).fit(data)
    model.recommend(["u1", "u2"], k=10)      # Polars frame: user_id, rank, item_id, score, fallback

Each class here is a thin wrapper: a `Recommender` from `recvae.models` (which does the learning)
plus the vocabularies that turn the matrix's rows and columns back into the original ids. Top-K,
seen-item masking, allow/deny lists and the popularity fallback are `recvae.scoring`'s and
`recvae.topk`'s, shared with `recvae recommend`; saving writes the same model directory as
`recvae train` (`recvae.artifact`), so either side reads what the other wrote.

Nothing heavy is imported until it is used: `import recvae` stays quick.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Self

import numpy as np
import polars as pl
import scipy.sparse as sp

from recvae.errors import RecvaeError

if TYPE_CHECKING:
    from recvae.data.dataset import Dataset
    from recvae.data.vocab import Vocabulary
    from recvae.models.base import Recommender

log = logging.getLogger(__name__)

HISTORY_DIR = "history"  # a saved model's user histories: a dataset directory inside it
_SHOWN_IDS = 5  # unknown ids quoted in an error message


# --- data -------------------------------------------------------------------------------------


def ingest(
    source: Any,
    *,
    users: Sequence[Any] | None = None,
    items: Sequence[Any] | None = None,
    **options: Any,
) -> Dataset:
    """Interactions from a log file, a frame or a matrix, as a `Dataset` with id vocabularies.

    `source` is one of:

    - a path (or a list of paths) to a CSV/Parquet/NDJSON/DuckDB log, read exactly as
      `recvae ingest` reads it; a dataset directory written by `recvae ingest` is loaded as is;
    - a Polars, pandas or PyArrow frame with user and item columns (named e.g. `user_id` and
      `item_id`, or given by `user_col=`/`item_col=`), read through the same validation;
    - a scipy sparse users x items matrix; `users=` and `items=` give the original ids of its
      rows and columns (default: 0..n-1).

    `options` are `recvae.data.ingest.IngestOptions` fields, e.g. `min_rating=3.5`,
    `min_user_count=5`, `user_col="customer"`.
    """
    from recvae.data.dataset import Dataset

    if isinstance(source, Dataset):
        return source
    if sp.issparse(source):
        if options:
            raise RecvaeError(
                f"ingest options ({', '.join(sorted(options))}) do not apply to a matrix; "
                "filter the matrix before passing it"
            )
        return _dataset_from_matrix(source, users, items)
    if users is not None or items is not None:
        raise RecvaeError("users= and items= name a matrix's rows and columns; pass a matrix")
    ingest_options = _ingest_options(options)
    if isinstance(source, str | Path):
        path = Path(source)
        if (path / "manifest.json").is_file():
            return Dataset.load(path)
        return _ingest_files([path], ingest_options)
    if isinstance(source, list | tuple) and all(isinstance(s, str | Path) for s in source):
        return _ingest_files([Path(s) for s in source], ingest_options)
    frame = _as_polars(source)
    with tempfile.TemporaryDirectory(prefix="recvae-frame-") as tmp:
        path = Path(tmp) / "frame.parquet"
        frame.write_parquet(path)
        dataset = _ingest_files([path], ingest_options)
    dataset.manifest["input"] = f"{type(source).__module__}.{type(source).__name__}"
    return dataset


def _ingest_options(options: dict[str, Any]) -> Any:
    import dataclasses

    from recvae.data.ingest import IngestOptions

    known = {f.name for f in dataclasses.fields(IngestOptions)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise RecvaeError(
            f"unknown ingest option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    return IngestOptions(**options)


def _ingest_files(paths: list[Path], options: Any) -> Dataset:
    from recvae.data.ingest import ingest as ingest_logs

    return ingest_logs(paths, options)


def _as_polars(frame: Any) -> pl.DataFrame:
    """A Polars frame from a Polars (lazy) frame, a pandas frame or a PyArrow table."""
    if isinstance(frame, pl.LazyFrame):
        return frame.collect()
    if isinstance(frame, pl.DataFrame):
        return frame
    module = type(frame).__module__.split(".")[0]
    if module == "pandas":
        return pl.from_pandas(frame)
    if module == "pyarrow":
        return pl.DataFrame(pl.from_arrow(frame))
    raise RecvaeError(
        f"cannot ingest a {type(frame).__name__}: expected a path, a Polars/pandas/Arrow frame, "
        "a scipy sparse matrix or a Dataset"
    )


def _dataset_from_matrix(
    matrix: sp.spmatrix, users: Sequence[Any] | None, items: Sequence[Any] | None
) -> Dataset:
    from recvae.data.dataset import Dataset
    from recvae.data.vocab import Vocabulary

    n_users, n_items = matrix.shape
    user_ids = list(users) if users is not None else np.arange(n_users, dtype=np.int64)
    item_ids = list(items) if items is not None else np.arange(n_items, dtype=np.int64)
    csr = sp.csr_matrix(matrix, dtype=np.float32)
    csr.sum_duplicates()
    if csr.nnz and not np.isfinite(csr.data).all():
        raise RecvaeError("the matrix contains NaN or infinite values")
    csr.eliminate_zeros()
    dataset = Dataset(csr, Vocabulary(user_ids, "user"), Vocabulary(item_ids, "item"))
    dataset.manifest = {"input": "scipy sparse matrix"}
    return dataset


# --- models -----------------------------------------------------------------------------------


class Model:
    """A fitted (or fittable) recommender with its user and item ids.

    Subclasses name a model of `recvae.models` (`name`); their keyword settings are that
    model's config fields. After `fit`, the model remembers every user's history (the whole
    dataset, so users held out for validation are recommended by fold-in too).
    """

    name: ClassVar[str]

    def __init__(self, **settings: Any) -> None:
        from recvae.models import build_model

        # the one factory: settings checked against the model's typed config (flat loop keys)
        self.recommender: Recommender = build_model(self.name, settings)
        self.items: Vocabulary | None = None
        self.users: Vocabulary | None = None
        self.history: sp.csr_matrix | None = None
        self.metadata: dict[str, Any] = {}
        self._train: sp.csr_matrix | None = None
        self._popularity: np.ndarray | None = None

    def __repr__(self) -> str:
        state = f"{len(self.items)} items" if self.items is not None else "not fitted"
        return f"{type(self).__name__}({state})"

    @property
    def config(self) -> Any:
        """The model's typed settings (a frozen dataclass), as saved in model.json."""
        return self.recommender.config  # type: ignore[attr-defined]

    # -- fitting --

    def fit(self, data: Any, *, validation: bool = False, valid_users: int | None = None) -> Self:
        """Train on `data` (anything `recvae.ingest` accepts) and return self.

        By default every interaction is trained on for the full epoch budget. With
        `validation=True` it trains as `recvae train` does: on the dataset's split when it has
        one, else with `valid_users` users (default 10%, at most 10,000) held out to pick the
        best epoch and stop early; the validation metrics land in `metadata["metrics"]` (the
        layout of recvae.workflow.fit, shared with `recvae train`).
        """
        from recvae.data.split import ProtocolSpec
        from recvae.workflow.fit import TrainSpec, fit_model

        dataset = ingest(data)
        spec = TrainSpec(self.name, self.config)
        protocol = ProtocolSpec(
            "auto" if validation else "none", valid_users=valid_users or 0, seed=spec.seed or 0
        )
        result = fit_model(dataset, spec, protocol)  # the one fit path (recvae.workflow.fit)
        return self._adopt(result, dataset)

    def _adopt(self, result: Any, dataset: Dataset) -> Self:
        """Take a `FitResult` of `dataset` as this model's state (fit and `auto` share it)."""
        self.recommender = result.model
        seconds = result.metadata["training"]["seconds"]
        self.items, self.users, self.history = dataset.items, dataset.users, dataset.matrix
        self._train = result.split.train
        self._popularity = None
        self.metadata = {**result.metadata, "written_by": "recvae.api"}
        log.info(
            "fitted %s on %d users x %d items in %.1fs", self.name, *self._train.shape, seconds,
            extra={"event": "fit", "model": self.name, "seconds": round(seconds, 2)},
        )  # fmt: skip
        return self

    # -- recommending --

    def recommend(
        self,
        users: Any,
        k: int = 10,
        *,
        exclude_seen: bool = True,
        allow_items: Iterable[Any] | None = None,
        deny_items: Iterable[Any] | None = None,
        history: Any = None,
        item_block: int | None = None,
    ) -> pl.DataFrame:
        """Top-`k` items for each of `users` (original ids), best first.

        Returns a Polars frame with columns user_id, rank (1-based), item_id, score and
        fallback (True: the user had no usable history and got the popularity ranking), in the
        order of `users`. Seen items are never recommended unless `exclude_seen=False`;
        `allow_items` restricts the candidates and `deny_items` removes some (ids the model does
        not know are ignored: it cannot recommend them anyway). Users come from the data the
        model was fitted on, or from `history` (anything `recvae.ingest` accepts). An id that is
        not there raises a RecvaeError naming it. `item_block` (e.g. 50000, for large
        catalogues): score the items in blocks of this many with a running top-K, so that a
        chunk of users holds (chunk x block) scores instead of (chunk x items); the rows are
        the same.
        """
        from recvae.scoring import UsersToScore, align_items

        items = self._fitted_items()
        if history is not None:
            dataset = ingest(history)
            user_vocab = dataset.users
            matrix = align_items(dataset.matrix, dataset.items, items)
        elif self.history is not None and self.users is not None:
            user_vocab, matrix = self.users, self.history
        else:
            raise RecvaeError(
                f"{self.name}: this model has no user histories (it was saved without them); "
                "pass history= (a dataset or log) or use recommend_items for one user's items"
            )
        rows = _lookup(user_vocab, _id_list(users), "user")
        frame = self._top_n(
            UsersToScore(user_vocab.original(rows), matrix[rows]),
            k, exclude_seen, allow_items, deny_items, item_block,
        )  # fmt: skip
        return frame

    def recommend_items(
        self,
        items: Any,
        k: int = 10,
        *,
        exclude_seen: bool = True,
        allow_items: Iterable[Any] | None = None,
        deny_items: Iterable[Any] | None = None,
    ) -> pl.DataFrame:
        """Top-`k` for a new user who interacted with `items` (original ids), by fold-in.

        The user need not exist in the training data: the model scores the history row built
        from `items`, exactly as it scores every user. Returns rank, item_id, score. Item ids
        the model does not know raise a RecvaeError naming them.
        """
        from recvae.scoring import UsersToScore

        vocab = self._fitted_items()
        columns = _lookup(vocab, _id_list(items), "item")
        columns = np.unique(columns)
        row = sp.csr_matrix(
            (np.ones(len(columns), dtype=np.float32), columns, [0, len(columns)]),
            shape=(1, len(vocab)),
        )
        new_user = UsersToScore(pl.Series("user_id", [0]), row)
        frame = self._top_n(new_user, k, exclude_seen, allow_items, deny_items)
        return frame.select("rank", "item_id", "score")

    def similar_items(self, item: Any, k: int = 10) -> pl.DataFrame:
        """The `k` items most similar to `item` (an original id), best first; not itself.

        Similarity is model-specific: cosine of item embeddings where the model has them
        (see each class), otherwise the scores the model gives a user whose whole history is
        `item` (fold-in of a one-item history). Returns rank, item_id, score.
        """
        from recvae.topk import mask_seen, top_k

        vocab = self._fitted_items()
        (index,) = _lookup(vocab, [item], "item")
        one_item = sp.csr_matrix(
            (np.ones(1, dtype=np.float32), [index], [0, 1]), shape=(1, len(vocab))
        )
        scores = np.array(self._similarities(int(index), one_item), dtype=np.float32, ndmin=2)
        mask_seen(scores, one_item)
        indices, values = top_k(scores, min(k, len(vocab)))
        keep = np.isfinite(values[0])
        return pl.DataFrame(
            {
                "rank": np.arange(1, int(keep.sum()) + 1, dtype=np.int32),
                "item_id": vocab.original(indices[0][keep]),
                "score": values[0][keep],
            }
        )

    def _similarities(self, index: int, one_item: sp.csr_matrix) -> np.ndarray:
        """Similarity of item `index` to every item; the default scores a one-item history."""
        vectors = self._item_vectors()
        if vectors is None:
            return self.recommender.score(one_item)[0]
        vectors = np.asarray(vectors, dtype=np.float32)
        norms = np.linalg.norm(vectors, axis=1)
        norms[norms == 0] = 1.0
        return (vectors @ vectors[index]) / (norms * norms[index])

    def _item_vectors(self) -> np.ndarray | None:
        """(n_items, d) item embeddings for cosine similarity, or None to score a history."""
        return None

    def _top_n(
        self,
        users: Any,
        k: int,
        exclude_seen: bool,
        allow_items: Iterable[Any] | None,
        deny_items: Iterable[Any] | None,
        item_block: int | None = None,
    ) -> pl.DataFrame:
        from recvae.scoring import ScoringOptions, recommend_chunks

        items = self._fitted_items()
        allow, deny = _item_filter(allow_items, items), _item_filter(deny_items, items)
        options = ScoringOptions(
            k=k, exclude_seen=exclude_seen, allow_items=allow, deny_items=deny,
            item_block=item_block,
        )  # fmt: skip
        frames = recommend_chunks(
            self.recommender, users, items, options, self.name, self._fallback_ranking()
        )
        return pl.concat(list(frames)).drop("model_version")

    def _fallback_ranking(self) -> np.ndarray:
        """Items per training user (the popularity fallback), as `recvae recommend` uses it."""
        if self._popularity is None:
            source = self._train if self._train is not None else self.history
            if source is None:
                return np.zeros(len(self._fitted_items()), dtype=np.float32)
            # users per item, as the artifact's popularity.npy counts them
            self._popularity = np.bincount(source.indices, minlength=source.shape[1]).astype(
                np.float32
            )
        return self._popularity

    def _fitted_items(self) -> Vocabulary:
        if self.items is None:
            raise RecvaeError(f"{self.name}: call fit (or recvae.load a saved model) first")
        return self.items

    # -- saving --

    def save(self, path: str | Path, *, with_history: bool = True) -> None:
        """Write a recvae model directory (as `recvae train` does), usable by `recvae recommend`.

        With `with_history`, the users' histories are kept in `PATH/history/` (a dataset
        directory), so `recvae.load(PATH).recommend(users)` works and
        `recvae recommend PATH --history PATH/history` exports the same recommendations.
        Each part is written to a temporary name and renamed into place; an existing `path`
        is replaced only when it is a recvae model directory (recvae.io.check_output).
        """
        from recvae.artifact import Artifact, save_artifact
        from recvae.data.dataset import Dataset
        from recvae.io import check_output

        items = self._fitted_items()
        path = Path(path)
        check_output(path, "model")  # never replaces what recvae did not write
        artifact = Artifact(self.recommender, items, self.metadata)
        save_artifact(artifact, path, train=self._train)
        if self._train is None:  # a loaded model: keep the fallback ranking it came with
            from recvae.artifact import POPULARITY_FILE

            np.save(path / POPULARITY_FILE, self._fallback_ranking(), allow_pickle=False)
        if with_history and self.history is not None and self.users is not None:
            Dataset(self.history, self.users, items).save(path / HISTORY_DIR)

    @classmethod
    def load(cls, path: str | Path) -> Self:
        """Load a model directory (or a model store's current model) saved as this class."""
        model = load(path)
        if not isinstance(model, cls):
            raise RecvaeError(f"{path} holds a {model.name!r} model, not {cls.name!r}")
        return model


class MultVAE(Model):
    """Mult-VAE (Liang et al. 2018); settings are `MultVAEConfig` fields, e.g. `epochs=50`.

    similar_items: cosine of the decoder's output-layer item vectors.
    """

    name: ClassVar[str] = "multvae"

    def _item_vectors(self) -> np.ndarray | None:
        module = self.recommender.module  # type: ignore[attr-defined]
        return module.decoder[-2].detach().numpy().T  # (hidden, n_items) -> (n_items, hidden)


class MultDAE(MultVAE):
    """Mult-DAE, the same paper's denoising autoencoder; settings are `MultDAEConfig` fields.

    similar_items: cosine of the decoder's output-layer item vectors.
    """

    name: ClassVar[str] = "multdae"


class RecVAE(Model):
    """RecVAE (Shenbin et al. 2020); settings are `RecVAEConfig` fields, e.g. `epochs=50`.

    similar_items: cosine of the decoder's item vectors.
    """

    name: ClassVar[str] = "recvae"

    def _item_vectors(self) -> np.ndarray | None:
        module = self.recommender.module  # type: ignore[attr-defined]
        return module.decoder_weight.detach().numpy().T


class Joint(Model):
    """Mult-VAE + a sparse EASE-started item-item path trained together (recvae.models.joint);
    settings are `JointConfig` fields, e.g. `Joint(neighbours=100, epochs=30)`.

    similar_items: the joint scores for a one-item history.
    """

    name: ClassVar[str] = "joint"


class EASE(Model):
    """EASE (Steck 2019), closed form; setting `l2` (e.g. `EASE(l2=200.0)`).

    similar_items: row `item` of the item-item weight matrix B, i.e. the score item alone
    gives every other item.
    """

    name: ClassVar[str] = "ease"


class SparseEASE(Model):
    """Sparse EASE: each item regresses on its top co-occurring `neighbours` only, so memory grows
    with items x neighbours, not items^2 (e.g. `SparseEASE(l2=200.0, neighbours=100)`); settings
    are `SparseEASEConfig` fields.

    similar_items: the scores a one-item history gives (that item's row of the sparse B).
    """

    name: ClassVar[str] = "sparse_ease"


class GFCF(Model):
    """GF-CF (Shen et al. 2021): normalised item-item filter plus `alpha` times the ideal
    low-pass filter on `rank` singular vectors (e.g. `GFCF(alpha=0.3, rank=256)`); settings are
    `GFCFConfig` fields. No training loop: one truncated SVD.

    similar_items: the scores a one-item history gives.
    """

    name: ClassVar[str] = "gfcf"


class ALS(Model):
    """Implicit-feedback ALS via `implicit`; settings `factors`, `regularization`, `alpha`, ...

    similar_items: cosine of the item factors.
    """

    name: ClassVar[str] = "als"

    def _item_vectors(self) -> np.ndarray | None:
        return self.recommender.item_factors  # type: ignore[attr-defined]


class BPR(Model):
    """Bayesian personalised ranking via `implicit`; settings `factors`, `learning_rate`, ...

    similar_items: cosine of the item factors (without the item bias).
    """

    name: ClassVar[str] = "bpr"

    def _item_vectors(self) -> np.ndarray | None:
        return self.recommender.item_factors[:, :-1]  # type: ignore[attr-defined]


class Popularity(Model):
    """Most-interacted items for everyone; no settings. The floor every model must clear.

    similar_items: the most popular items (popularity ignores the history by design).
    """

    name: ClassVar[str] = "popularity"


class Blend(Model):
    """A blend of models' per-user normalised scores; settings are `BlendConfig` fields, e.g.
    `Blend(members=[{"model": "multdae"}, {"model": "ease", "l2": 200.0}], weights=[0.9, 0.1])`
    (`weights="tune"` tunes them on validation users: fit with `validation=True`).

    similar_items: the blend's scores for a one-item history.
    """

    name: ClassVar[str] = "blend"


MODELS: dict[str, type[Model]] = {
    cls.name: cls
    for cls in (
        MultVAE, MultDAE, RecVAE, Joint, EASE, SparseEASE, GFCF, ALS, BPR, Popularity, Blend
    )
}


def auto(
    data: Any,
    *,
    budget: str | float | None = None,
    metric: str = "ndcg@100",
    candidates: Sequence[str] = (),
    refit: bool = True,
    threads: int = 0,
    seed: int = 0,
    valid_users: int | None = None,
) -> Model:
    """Choose the model for `data` as `recvae train --model auto` does and return it fitted.

    Within `budget` ("30m", "2h", "1h30m" or seconds; default: scaled with the data, 3 minutes
    plus 1 per 100,000 interactions) it fits a fixed set of candidates (EASE with a short l2
    grid or sparse EASE, ALS, GF-CF, Mult-DAE, RecVAE, and a blend of the best one with its
    best partner of another model family, plus a third family's best where that scores higher
    on validation) on the data's split, or with `valid_users` users
    (default `recvae.workflow.auto.selection_valid_users`: 10%, but at least 1,000 where three
    quarters are left to train on; at most 10,000) held out, picks the best by the validation
    `metric` and refits it on all data (`refit=False`: keep the fit on the training part). The
    result is the winner's class (e.g. `EASE`); its `metadata["auto"]` lists every candidate's
    score, settings, time and, for one skipped, why. `candidates` restricts the set to some
    labels (`recvae.workflow.auto.CANDIDATES`).
    """
    from recvae.config import config_from_dict
    from recvae.data.split import ProtocolSpec
    from recvae.workflow.auto import AutoConfig, fit_auto

    if isinstance(budget, int | float) and not isinstance(budget, bool):
        budget = f"{budget}s"
    settings = {"budget": budget or "", "metric": metric, "candidates": list(candidates),
                "refit": refit, "threads": threads, "seed": seed}  # fmt: skip
    config = config_from_dict(AutoConfig, settings, source="recvae.auto")
    dataset = ingest(data)
    protocol = ProtocolSpec("auto", valid_users=valid_users or 0, seed=seed)
    result = fit_auto(dataset, config, protocol)
    model = MODELS[result.fit.model.name]()
    return model._adopt(result.fit, dataset)


def load(path: str | Path) -> Model:
    """A saved model: a directory from `Model.save` or `recvae train`, or a model store
    (its current model). Histories saved beside it (`PATH/history/`) are loaded too."""
    from recvae.artifact import item_popularity, load_artifact
    from recvae.data.dataset import Dataset
    from recvae.registry import resolve_model_dir
    from recvae.scoring import align_items

    model_dir, _version = resolve_model_dir(Path(path))
    artifact = load_artifact(model_dir)
    name = artifact.model.name
    if name not in MODELS:
        raise RecvaeError(f"{model_dir}: no Python API class for model {name!r}")
    model = MODELS[name]()
    model.recommender, model.items = artifact.model, artifact.items
    model.metadata = artifact.metadata
    model._popularity = item_popularity(model_dir)
    if (model_dir / HISTORY_DIR / "manifest.json").is_file():
        history = Dataset.load(model_dir / HISTORY_DIR)
        model.users = history.users
        model.history = align_items(history.matrix, history.items, artifact.items)
    return model


# --- ids --------------------------------------------------------------------------------------


def _id_list(ids: Any) -> list[Any]:
    """A list of ids from one id or any iterable of ids (a str is one id, not characters)."""
    if isinstance(ids, str | bytes | int | np.integer):
        return [ids]
    if isinstance(ids, pl.Series):
        return ids.to_list()
    values = list(ids)
    if not values:
        raise RecvaeError("no ids given; pass at least one")
    return values


def _item_filter(ids: Iterable[Any] | None, items: Vocabulary) -> np.ndarray | None:
    """Dense indices of the known ids of an allow/deny list (unknown ones cannot be recommended
    anyway), or None when there is no list."""
    if ids is None:
        return None
    values = [ids] if isinstance(ids, str | bytes | int | np.integer) else list(ids)
    if not values:
        return np.empty(0, dtype=np.int64)
    return items.lookup(pl.Series(items.name, values, strict=False)).indices


def _lookup(vocab: Vocabulary, ids: list[Any], what: str) -> np.ndarray:
    """Dense indices of `ids`; a RecvaeError naming the ids the vocabulary does not hold."""
    # strict=False: ids of mixed types (7 and "u7") are read as strings, not refused
    found = vocab.lookup(pl.Series(vocab.name, ids, strict=False))
    unknown = [ids[i] for i in np.flatnonzero(~found.found)]
    if unknown:
        shown = ", ".join(repr(i) for i in unknown[:_SHOWN_IDS])
        more = f" and {len(unknown) - _SHOWN_IDS} more" if len(unknown) > _SHOWN_IDS else ""
        raise RecvaeError(
            f"unknown {what} id(s) {shown}{more} ({len(unknown)} of {len(ids)} not in the "
            f"model's {what}s)"
            + ("; for a new user use recommend_items(item_ids)" if what == "user" else "")
        )
    return found.indices
