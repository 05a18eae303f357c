"""The model card: what a registered generator is, typed, in one place.

Written by the pipeline when it registers a model, stored as the model's BentoML metadata, and
read back by the registry, the task result, ``ganforge models list`` and the import of the shipped
default model. Every reader goes through :class:`ModelCard`, never through string keys.
"""

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ganforge.errors import CorruptModel, InvalidInput
from ganforge.generator import GeneratorSpec

MNIST_CLASSES = tuple(str(d) for d in range(10))


@dataclass(frozen=True, kw_only=True)
class ModelCard:
    family: str
    conditional: bool
    num_classes: int  # 0: unconditional
    latent_dim: int
    image_shape: tuple[int, int, int]  # (channels, height, width)
    config: dict[str, Any]  # the training spec (ganforge.spec.TrainConfig), as JSON
    architecture: dict[str, Any]  # the networks' arguments (models.ModelConfig), as JSON
    steps: int
    train_seconds: float
    metrics: dict[str, Any]  # the evaluator's report (trainer.evaluate.EvalReport.to_dict)
    parity_max_abs_diff: float
    onnx_opset: int  # from the exporter (trainer.export.OPSET)
    ganforge_version: str
    dataset: str = "mnist"
    class_names: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.conditional != (self.num_classes > 0):
            raise CorruptModel(f"model card: conditional={self.conditional} but num_classes="
                               f"{self.num_classes}")
        if self.conditional and len(self.class_names) != self.num_classes:
            raise CorruptModel(f"model card: {len(self.class_names)} class names for "
                               f"{self.num_classes} classes")

    @property
    def spec(self) -> GeneratorSpec:
        """What the ONNX graph takes: the generator's input contract."""
        return GeneratorSpec(self.latent_dim, self.num_classes)

    @property
    def label_accuracy(self) -> float | None:
        value = self.metrics.get("label_accuracy")
        return None if value is None else float(value)

    @property
    def class_kl(self) -> float | None:
        value = self.metrics.get("class_kl")
        return None if value is None else float(value)

    @property
    def fcd(self) -> float | None:
        value = self.metrics.get("fcd")
        return None if value is None else float(value)

    def to_metadata(self) -> dict[str, Any]:
        """JSON-able, with no None anywhere (BentoML metadata refuses None)."""
        return _without_none(asdict(self))

    @classmethod
    def from_metadata(cls, meta: dict[str, Any]) -> "ModelCard":
        """Read a stored card; raises CorruptModel naming what is missing or malformed. Cards
        written before ``dataset`` and ``class_names`` existed are MNIST digit models."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in meta.items() if k in known}
        missing = sorted(f.name for f in fields(cls) if f.name not in values
                         and f.name not in ("dataset", "class_names"))
        if missing:
            raise CorruptModel(f"model card: missing {', '.join(missing)}")
        try:
            values["image_shape"] = tuple(int(x) for x in values["image_shape"])
            if "class_names" not in values:
                values["class_names"] = MNIST_CLASSES if values["conditional"] else ()
            values["class_names"] = tuple(str(c) for c in values["class_names"])
            for name in ("num_classes", "latent_dim", "steps", "onnx_opset"):
                values[name] = int(values[name])
            for name in ("train_seconds", "parity_max_abs_diff"):
                values[name] = float(values[name])
            values["conditional"] = bool(values["conditional"])
            for name in ("config", "architecture", "metrics"):
                if not isinstance(values[name], dict):
                    raise TypeError(f"{name} is not a mapping")
            return cls(**values)
        except (TypeError, ValueError) as exc:
            raise CorruptModel(f"model card: {exc}") from exc


MAX_LISTED = 30  # class names an error message lists before "..."


def resolve_label(card: ModelCard, value: str | int, field: str = "label") -> int:
    """The class index a request means by ``value``: a class name of the model (exact, else the
    one name equal ignoring case) or an index ``0 .. num_classes - 1``. Names win over indices,
    so MNIST's "7" is class 7 either way and a folder with classes named "10", "20" works.
    Raises InvalidInput on ``field`` listing the model's classes."""
    text = str(value).strip()
    if not card.conditional:
        raise InvalidInput(field, f"this model is unconditional and takes no {field}")
    names = card.class_names
    if text in names:
        return names.index(text)
    folded = [i for i, name in enumerate(names) if name.casefold() == text.casefold()]
    if len(folded) == 1:
        return folded[0]
    if text.lstrip("-").isdigit():
        index = int(text)
        if 0 <= index < card.num_classes:
            return index
    listed = ", ".join(names[:MAX_LISTED]) + (", ..." if len(names) > MAX_LISTED else "")
    raise InvalidInput(field, f"unknown {field} {text!r}; allowed: a class name ({listed}) "
                              f"or an index 0-{card.num_classes - 1}")


def _without_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_without_none(v) for v in value]
    return value
