"""What a result row is about, typed: the technique that made a variant (with the family of answers it belongs to and
the number format it computes in) and the row identity every metric of one variant shares (`Subject`).

results.csv keeps these as plain columns; a frame read back turns the technique column into `Technique` again
(`Technique.of`), so the report groups and reads CPU features from the enum, never from the names."""
from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum


class Family(str, Enum):
    """Which question of the study a technique answers (the report's rows)."""
    REFERENCE = "reference"  # what the others are measured against: the shipped voice, a target speaker, recordings
    ADAPTATION = "adaptation"
    QUANTIZATION = "quantization"
    PRUNING = "pruning"
    DISTILLATION = "distillation"
    BACKEND = "back-end"
    CHECK = "check"  # a check of another row, not a cheaper voice: parity, a listening test, an architecture scan


class Precision(str, Enum):
    """The number format a technique's speed depends on, and the CPU feature that computes it natively."""
    FP32 = "fp32"
    BF16 = "bf16"
    INT8 = "int8"  # int8 activations and weights: integer dot products
    WEIGHT_INT8 = "weight-int8"  # int8 weights only, computed in fp32
    BNB = "bitsandbytes"

    @property
    def relies_on(self) -> str:
        """What a reader's CPU must have for a speed measured with this format to carry over."""
        return {Precision.FP32: "FP32 only (AVX2 or better)",
                Precision.BF16: "native bf16 (AVX-512 BF16 or AMX)",
                Precision.INT8: "int8 dot products (VNNI where present)",
                Precision.WEIGHT_INT8: "FP32 only (AVX2 or better)",
                Precision.BNB: "bitsandbytes CPU kernels (AVX-512 where present)"}[self]


class Technique(str, Enum):
    """What made a variant: its label in results.csv, its family and its number format."""
    family: Family
    precision: Precision

    def __new__(cls, label: str, family: Family, precision: Precision = Precision.FP32):
        obj = str.__new__(cls, label)
        obj._value_ = label
        obj.family, obj.precision = family, precision
        return obj

    BASELINE = ("baseline", Family.REFERENCE)
    TARGET = ("target", Family.REFERENCE)  # the speaker an adapted voice is taught
    GROUND_TRUTH = ("ground-truth", Family.REFERENCE)  # a voice compared with a corpus's recordings
    DATA = ("data", Family.REFERENCE)  # a corpus described, not a voice
    FINETUNE = ("finetune", Family.ADAPTATION)
    TORCH_DYNAMIC_INT8 = ("torch dynamic int8", Family.QUANTIZATION, Precision.INT8)
    ORT_DYNAMIC_INT8 = ("ort dynamic int8", Family.QUANTIZATION, Precision.INT8)
    ORT_STATIC_INT8 = ("ort static int8", Family.QUANTIZATION, Precision.INT8)
    ORT_GUIDED_INT8 = ("ort static int8 (sensitivity-guided)", Family.QUANTIZATION, Precision.INT8)
    WEIGHT_INT8 = ("weight-only int8", Family.QUANTIZATION, Precision.WEIGHT_INT8)
    BF16 = ("bf16", Family.QUANTIZATION, Precision.BF16)
    BITSANDBYTES = ("bitsandbytes", Family.QUANTIZATION, Precision.BNB)
    HALF_PRECISION_BNB = ("half precision / bitsandbytes", Family.QUANTIZATION, Precision.BNB)
    UNSTRUCTURED_PRUNING = ("unstructured pruning", Family.PRUNING)
    STRUCTURED_RECOVERY = ("structured pruning + recovery", Family.PRUNING)
    STRUCTURED_INT8 = ("structured + int8", Family.PRUNING, Precision.INT8)
    DISTILLATION = ("distillation", Family.DISTILLATION)
    RUNTIME = ("runtime", Family.BACKEND)  # the same graph on another runtime
    STATIC_SHAPE = ("static-shape decoder", Family.BACKEND)
    STATIC_SHAPE_BF16 = ("static-shape decoder + bf16", Family.QUANTIZATION, Precision.BF16)  # bf16 is the change
    HARDWARE = ("hardware", Family.BACKEND)
    HARDWARE_BF16 = ("hardware bf16", Family.BACKEND, Precision.BF16)
    HARDWARE_INT8 = ("hardware int8", Family.BACKEND, Precision.INT8)
    NPU_PREPARATION = ("npu preparation", Family.CHECK, Precision.INT8)  # a file made ready, not timed
    PARITY = ("parity", Family.CHECK)
    HARDWARE_PARITY = ("hardware parity", Family.CHECK)
    ARCHITECTURE_SCAN = ("architecture scan", Family.CHECK)
    LISTENING_TEST = ("listening test", Family.CHECK)

    def __str__(self) -> str:
        return self.value

    @classmethod
    def of(cls, label: "str | Technique") -> "Technique":
        """The technique a results.csv label names; a ValueError lists the known labels for one that is not."""
        if isinstance(label, cls):
            return label
        try:
            return cls(str(label))
        except ValueError:
            raise ValueError(f"technique {label!r} is not one of lib.core.subject.Technique: "
                             f"{', '.join(t.value for t in cls)}") from None

    @classmethod
    def family_of(cls, label) -> Family | None:
        """The family of a results.csv label, None for one the enum does not hold (a run older than a rename)."""
        try:
            return cls.of(label).family
        except ValueError:
            return None

    @classmethod
    def of_precision(cls, precision: str) -> "Technique":
        """A back-end's technique for an engine computing in `precision` (an engine spec's field)."""
        return {"bf16": cls.HARDWARE_BF16, "int8": cls.HARDWARE_INT8}.get(str(precision), cls.HARDWARE)


ADAPTATION_FACTS = ("method", "rank", "merged", "run")  # what an adapted voice's rows say of how it was made


@dataclass(frozen=True)
class Subject:
    """What a result row is about: the model, the variant (a spec's rendered name), the technique that made it,
    the variant its ratios are taken against (`parent`), and where it ran; an adapted voice also says how it was made
    (`ADAPTATION_FACTS`), so that no verdict reads them out of its name."""
    model: str
    variant: str
    technique: Technique = Technique.BASELINE
    parent: str = ""
    backend: str = ""
    device: str = "cpu"
    threads: int | None = None
    method: str = ""  # an adaptation method's kind: full, full-acoustic, lora, qlora, lora-decoder, ...
    rank: int | None = None  # its LoRA rank (None: no adapter)
    merged: bool | None = None  # its adapter merged into the weights (False: timed unmerged; None: no adapter)
    run: str = ""  # whose budget trained it: '' this run, else the long runs' label (results.LONG_RUN)

    def __post_init__(self):
        object.__setattr__(self, "technique", Technique.of(self.technique))
        if not self.model or not self.variant:
            raise ValueError(f"a result's subject needs a model and a variant, got {self.model!r}/{self.variant!r}")

    def fields(self) -> dict:
        """The subject as results.csv's identity columns (the technique as its label)."""
        return {"model": self.model, "variant": self.variant, "technique": self.technique.value,
                "parent": self.parent, "backend": self.backend, "device": self.device, "threads": self.threads,
                "method": self.method, "rank": self.rank, "merged": self.merged, "run": self.run}

    def but(self, **changes) -> "Subject":
        """The same subject with `changes` (another variant, parent or thread count)."""
        return replace(self, **changes)
