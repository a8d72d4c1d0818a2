"""VoiceSpec: what a variant of the voice is, as data. Its student parts (decoder, flow, front end), each with its
kind, width and source (this run, or a pack with its steps, hours and device), plus back-end, precision and threads.
A variant's name is rendered from its spec, never parsed back."""
from __future__ import annotations

from dataclasses import dataclass, replace

from lib.core.results import LONG_RUN
from lib.voices.artefacts import gpu_of_hours

ROLE_OF_KIND = {"decoder": "decoder", "istft_decoder": "decoder", "hybrid_decoder": "decoder", "flow": "flow",
                "frontend": "frontend"}
ROLES = ("decoder", "flow", "frontend")  # the order a name lists its parts in
TEACHER_NAME = {"torch-cpu": "teacher", "ort-cpu": "fp32"}  # the teacher itself: the module, and the shipped file
BACKEND_TAG = {"torch-cpu": "", "ort-cpu": "-ort"}  # what a student's name says about where it runs


@dataclass(frozen=True)
class Source:
    """Where a part was trained: this run (`device` empty), or a pack recorded on `device` ('cpu-long' for the long
    CPU runs, 'h100', ...) after `steps` steps and `hours` of training; `trained` False for a random-weight part."""
    device: str = ""
    steps: int | None = None
    hours: float | None = None
    trained: bool = True
    device_hours: float = 0.0  # a phase of the run on a lent GPU (`gpu`), beside its CPU `hours`
    gpu: str = ""

    @classmethod
    def pack(cls, device: str, config: dict) -> "Source":
        """The source a pack's config.json describes, recorded on `device`."""
        return cls(device, config.get("steps"), config.get("hours"),
                   device_hours=float(config.get("device_hours") or 0.0), gpu=gpu_of_hours(config))


HERE = Source()


@dataclass(frozen=True)
class Part:
    """One student part: its `name` (a pack's `student`, e.g. 'istft192x6-adv', 'flow96', 'fe96'), config `kind`
    (decoder, istft_decoder, flow, frontend), width (channels) and source."""
    name: str
    kind: str
    width: int | None = None
    source: Source = HERE

    def __post_init__(self):
        if self.kind not in ROLE_OF_KIND:
            raise ValueError(f"part {self.name!r}: kind {self.kind!r} is none of {sorted(ROLE_OF_KIND)}")

    @property
    def role(self) -> str:
        return ROLE_OF_KIND[self.kind]

    @classmethod
    def of_pack(cls, config: dict, device: str) -> "Part":
        """The part a pack's config.json describes (its `student`, `kind` and build widths), recorded on `device`."""
        build = config.get("build", {})
        width = build.get("dim") or build.get("hidden_channels") or build.get("upsample_initial_channel")
        return cls(config["student"], config["kind"], width, Source.pack(device, config))


@dataclass(frozen=True)
class VoiceSpec:
    """The teacher with `parts` in place of its own (none: the teacher itself), run on `backend` at `precision`
    with `threads` threads."""
    parts: tuple[Part, ...] = ()
    backend: str = "torch-cpu"
    precision: str = "fp32"
    threads: int | None = None

    def __post_init__(self):
        roles = [p.role for p in self.parts]
        if len(set(roles)) != len(roles):
            raise ValueError(f"a voice takes one part per role, got {roles}")
        if self.backend not in BACKEND_TAG:
            raise ValueError(f"back-end {self.backend!r}: a student voice runs on {sorted(BACKEND_TAG)}")
        object.__setattr__(self, "parts", tuple(sorted(self.parts, key=lambda p: ROLES.index(p.role))))

    def part(self, role: str) -> Part | None:
        return next((p for p in self.parts if p.role == role), None)

    def on(self, backend: str) -> "VoiceSpec":
        return replace(self, backend=backend)

    def with_part(self, part: Part) -> "VoiceSpec":
        """The same voice with `part` in its role (added, or in place of the one there)."""
        return replace(self, parts=tuple(p for p in self.parts if p.role != part.role) + (part,))

    @property
    def device(self) -> str:
        """Where the voice's lead part (its first) was recorded; empty for this run's."""
        return self.parts[0].source.device if self.parts else ""

    def render(self, at: str = "@") -> str:
        """The name: the parts joined by '+' ('teacher' first for this run's flow or front end on the teacher's
        decoder), a long run's part that joins another's voice tagged '-long', '-untrained' for random weights,
        `at` and the lead part's device for a recorded voice, and '-ort' on ONNX Runtime."""
        if not self.parts:
            return TEACHER_NAME[self.backend] + ("-ort" if self.backend == "ort-cpu" else "")
        labels = [p.name + ("-long" if i and p.source.device == LONG_RUN else "") for i, p in enumerate(self.parts)]
        if self.part("decoder") is None and not self.device:
            labels.insert(0, "teacher")
        untrained = "-untrained" if any(not p.source.trained for p in self.parts) else ""
        where = f"{at}{self.device}" if self.device else ""
        return "+".join(labels) + untrained + where + BACKEND_TAG[self.backend]

    @property
    def name(self) -> str:
        return self.render()

    def budget(self, minutes_here: dict, device_here: str) -> str:
        """What training this voice cost, for the verdict lines that judge it: each recorded part's hours where it
        trained (and a GPU phase's device-hours), and its parts trained in this run (`minutes_here`: part name ->
        minutes) on `device_here`; empty for the teacher itself."""
        bits = []
        for p in self.parts:
            if p.source.device and p.source.hours is not None:
                bits.append(f"{p.source.hours:.2f} machine-hours on {p.source.device}"
                            + (f" + {p.source.device_hours:.2f} device-hours on {p.source.gpu}"
                               if p.source.device_hours else "")
                            + f" ({p.role})")
        here = [p for p in self.parts if not p.source.device and p.source.trained]
        if here:
            minutes = sum(float(minutes_here.get(p.name, 0.0)) for p in here)
            bits.append(f"{minutes:.1f} minutes on {device_here} in this run ({', '.join(p.role for p in here)})")
        return ("after " + " + ".join(bits) + " of training") if bits else ""

    @property
    def folder(self) -> str:
        """The name as a folder name (no '@')."""
        return self.render(at="_at_")
