"""What the HTTP routes take: typed, bounded inputs (every limit is stated here, once)."""

from typing import Annotated, Literal

from fastapi import Path, Query
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ganforge.generator import MAX_IMAGES, MAX_SEED

Digit = Annotated[int, Field(ge=0, le=9)]
Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]
Count = Annotated[int, Field(ge=1, le=MAX_IMAGES)]
Latent = Annotated[list[Annotated[float, Field(allow_inf_nan=False)]], Field(min_length=1,
                                                                               max_length=1024)]
Format = Literal["png", "npy"]
MODEL_PATTERN = r"^[A-Za-z0-9_.:-]+$"  # name or name:version
ModelTag = Annotated[str, Field(min_length=1, max_length=200, pattern=MODEL_PATTERN)]
ModelQuery = Annotated[str | None, Query(min_length=1, max_length=200, pattern=MODEL_PATTERN,
                                         description="name or name:version; default: the default")]
DigitQuery = Annotated[int | None, Query(ge=0, le=9, description="digit to draw (digit models; "
                                                                   "the same as label)")]
Label = Annotated[str, Field(min_length=1, max_length=64)] | Annotated[int, Field(ge=0, le=4096)]
LabelQuery = Annotated[str | None, Query(min_length=1, max_length=64,
                                         description="class to draw: a name of the model's "
                                                     "class_names (see /models) or its index")]
SeedQuery = Annotated[int | None, Query(ge=0, le=MAX_SEED,
                                        description="same seed, same images; random when absent")]
CountQuery = Annotated[int, Query(ge=1, le=MAX_IMAGES, description="images; a grid when > 1")]
JobId = Annotated[str, Path(pattern=r"^[A-Za-z0-9-]{1,64}$")]
Artifact = Literal["samples.png", "losses.png"]


class GenerateRequest(BaseModel):
    """``POST /generate``: digits drawn from a seed, or given latents (with digits)."""

    model_config = ConfigDict(extra="forbid")
    digits: Annotated[list[Digit], Field(min_length=1, max_length=MAX_IMAGES)] | None = None
    labels: Annotated[list[Label], Field(min_length=1, max_length=MAX_IMAGES)] | None = None
    latents: Annotated[list[Latent], Field(min_length=1, max_length=MAX_IMAGES)] | None = None
    n: Count = 1
    seed: Seed | None = None
    model: ModelTag | None = None
    format: Format = "png"

    @model_validator(mode="after")
    def _agree(self) -> "GenerateRequest":
        """Refuse a body whose fields contradict each other instead of ignoring one: the number
        of images comes from the latents, from the classes listed, or from ``n``."""
        n_given = "n" in self.model_fields_set
        if self.latents is not None:
            if self.seed is not None:
                raise ValueError("seed: not used with latents (the latents are the noise); "
                                 "leave seed out")
            if n_given and self.n != len(self.latents):
                raise ValueError(f"n: {self.n} contradicts the {len(self.latents)} latents given "
                                 f"(one image per latent); leave n out")
            return self
        for field, classes in (("digits", self.digits), ("labels", self.labels)):
            if classes and n_given and self.n != len(classes):
                raise ValueError(f"n: {self.n} contradicts the {len(classes)} {field} given (one "
                                 f"image per entry of {field}); leave n out or make them agree")
        return self


class GenerateResponse(BaseModel):
    model: str
    seed: int | None
    images: list[str]  # base64 PNGs
