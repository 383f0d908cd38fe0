"""The one configuration object: pydantic, loaded from TOML, dotted overrides, validated.

Errors name the field (``budget.params_m: Input should be greater than 0``). Secrets never live
here: an LLM's API key is read from the environment variable named by ``api_key_env``.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import tomli_w
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from archsmith.agents.servers import ServerSpec
from archsmith.graph.config_scoring import (  # noqa: F401  (re-exported: one config namespace)
    DetectionTrainConfig,
    EvaluatorConfig,
    ExecutorConfig,
    NasDetConfig,
    SupernetEvaluatorConfig,
    SupernetTrainingConfig,
    TrainEvaluatorConfig,
    _Section,
)

POLICIES = ("algorithmic", "llm")
BUILTIN_ROLES = ("navigator", "generator", "verifier", "debugger", "downscaler")


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names every offending field."""


class SpaceConfig(_Section):
    name: str = Field("template", description="Registered search space (archsmith.tools.spaces).")
    settings: dict[str, Any] = Field(default_factory=dict, description="Passed to the space factory.")


class BudgetConfig(_Section):
    # Optional fields default to None (no limit) because TOML has no null: the saved resolved
    # config omits None values and must load back to the same object.
    params_m: float | None = Field(None, gt=0, description="Max parameters, millions (None: no limit).")
    flops_m: float | None = Field(
        None, gt=0, description="Max FLOPs (= 2 x MACs), millions, at input_size (None: no limit)."
    )
    input_size: int = Field(32, ge=8, le=1024, description="Square input resolution for profiling.")
    num_classes: int = Field(10, ge=2)

    def violations(self, params: int | None, flops: int | None) -> list[str]:
        """What is over the budget, in words (empty: within budget; unknown figures pass)."""
        over = []
        if self.params_m is not None and params is not None and params > self.params_m * 1e6:
            over.append(f"params {params / 1e6:.3f} M > {self.params_m} M")
        if self.flops_m is not None and flops is not None and flops > self.flops_m * 1e6:
            over.append(f"FLOPs {flops / 1e6:.1f} M > {self.flops_m} M")
        return over


class FairNADConfig(_Section):
    """FairNAD's multi-type mutation (search.mutation = "fairnad"); defaults from its Table 5."""

    initial: int = Field(8, ge=1, description="k0: first mutations of the base, with fair ideas.")
    idea_parents: int = Field(8, ge=0, description="k1: stage I, top-k parents x a fairly sampled idea.")
    pareto_parents: int = Field(8, ge=0, description="k2: stage II, NSGA-II parents: upscale or tune.")
    iterative_parents: int = Field(4, ge=0, description="k3: stage III, top-k parents refined iteratively.")
    iterative_steps: int = Field(2, ge=1, description="d: refinement steps per stage-III chain.")
    upscale_below: float = Field(
        0.9, gt=0, le=1, description="Stage II upscales a parent any of whose costs is below this x its limit."
    )


class ModelStrategyConfig(_Section):
    """The surrogate-guided Navigator (search.strategy = "model"); see docs/search.md."""

    trees: int = Field(50, ge=2, le=1000, description="Extremely randomised trees in the score model.")
    exploration: float = Field(
        1.0, ge=0, description="UCB weight of the most exploring child of a generation (model std units); "
        "the others take evenly spaced weights down to 0 (the predicted best)."
    )
    mutations_per_parent: int = Field(
        24, ge=0, description="Enumerable spaces: proposals drawn by the space's operators from each pool "
        "member, besides every single-position change of it."
    )
    random_proposals: int = Field(
        200, ge=0, description="Enumerable spaces: fresh samples added to the proposals."
    )
    warm_start_pool: int = Field(
        20, ge=1, description="Enumerable spaces: fresh samples drawn per warm-start child."
    )
    proposals_per_child: int = Field(
        4, ge=1, description="Other spaces (template, code, yolo): mutations proposed per child, "
        "warm start included; each costs about one algorithmic Generator step."
    )


class SearchConfig(_Section):
    """Candidate budget, stop rules and the Navigator's algorithmic strategy."""

    max_candidates: int = Field(
        40, ge=1, description="Distinct candidates evaluated before the run stops (the budget)."
    )
    max_children: int | None = Field(
        None, ge=1, description="Cap on children generated, discarded ones included (10 x budget)."
    )
    children_per_generation: int = Field(4, ge=1, description="Children the Navigator plans at once.")
    target_score: float | None = Field(None, description="Stop once a candidate reaches this score.")
    time_limit_s: float | None = Field(None, gt=0, description="Wall-clock limit over all sessions.")
    top_k: int = Field(5, ge=1, description="Parent pool size (PhaseNAS's K).")
    parent_selection: Literal["top_k", "pareto"] = "top_k"
    mutation: Literal["default", "fairnad"] = Field(
        "default", description="default: the Navigator's plans (PhaseNAS phases); fairnad: FairNAD's "
        "multi-type mutation (stages I-III, see [search.fairnad]); children_per_generation is then k1+k2+k3.",
    )
    fairnad: FairNADConfig = Field(default_factory=FairNADConfig)
    strategy: Literal["model", "evolution"] = Field(
        "model", description="model: a score model fitted on free features picks each child from "
        "many proposals (upper confidence bounds); evolution: rank-weighted mutation of the top-k."
    )
    warm_start: Literal["cost_aware", "random"] = Field(
        "cost_aware", description="The first children: the most capable within the budget, spread "
        "over the space (cost_aware), or uniform samples / seed mutations (random)."
    )
    operator_bandit: bool = Field(
        True, description="Choose mutation operators by Thompson sampling on how often each beat "
        "its parent (both strategies); false: uniformly."
    )
    bandit_epsilon: float = Field(0.1, ge=0, le=1, description="Share of operator choices made uniformly.")
    model: ModelStrategyConfig = Field(default_factory=ModelStrategyConfig)

    def children_cap(self) -> int:
        return self.max_children or 10 * self.max_candidates


class ParallelConfig(_Section):
    workers: int = Field(2, ge=1, le=256, description="Children built and evaluated at once.")


class SandboxConfig(_Section):
    mode: Literal["sandbox", "inprocess"] = Field(
        "sandbox", description="inprocess runs candidates in this process: debugging only."
    )
    timeout_s: float = Field(120.0, gt=0)
    memory_mb: int = Field(
        8192, ge=256, description="Address space a candidate may add on top of its warm worker's."
    )
    torch_threads: int = Field(1, ge=1, description="torch intra-op threads per candidate.")
    private_home: bool = Field(
        True, description="Where Landlock exists, candidates read only system directories, the Python "
        "installation and the import path (not the home directory).",
    )


class LLMSettings(_Section):
    provider: Literal["openai"] = Field(
        "openai", description="OpenAI-compatible chat endpoint: vLLM, llama.cpp, Ollama, hosted."
    )
    base_url: str | None = Field(None, description="e.g. http://127.0.0.1:8000/v1 for `vllm serve`.")
    model: str = "gpt-4o-mini"
    temperature: float = Field(0.7, ge=0, le=2)
    max_tokens: int = Field(1024, ge=16)
    timeout_s: float = Field(
        120.0, gt=0, description="Per-call limit: no answer within it is a timeout (then retried)."
    )
    max_retries: int = Field(
        2, ge=0, le=10, description="Re-asks after an unusable answer (empty, truncated, garbled)."
    )
    max_endpoint_retries: int = Field(
        3, ge=0, le=10,
        description="Retries after an endpoint failure (refused, timeout, 429, 5xx, broken body).",
    )
    backoff_s: float = Field(
        1.0, ge=0, description="First wait before an endpoint retry; doubles each time, jittered."
    )
    backoff_max_s: float = Field(
        30.0, ge=0,
        description="Longest wait between retries; a longer Retry-After ends the retries instead.",
    )
    api_key_env: str = Field("OPENAI_API_KEY", description="Environment variable holding the key.")
    server: ServerSpec | None = Field(
        None, description="A server the run starts and stops itself (llamacpp, vllm or a command); "
        "base_url then points at it.",
    )

    @model_validator(mode="after")
    def _backoff_cap_covers_base(self) -> LLMSettings:
        if self.backoff_max_s < self.backoff_s:
            raise ValueError(
                f"backoff_max_s ({self.backoff_max_s}) must be at least backoff_s ({self.backoff_s})"
            )
        return self


class RoleConfig(_Section):
    policy: Literal["algorithmic", "llm"] = "algorithmic"
    llm: LLMSettings = Field(default_factory=LLMSettings)
    fallback: Literal["algorithmic", "none"] = Field(
        "algorithmic",
        description="When the llm policy gets no usable answer: run the role's algorithmic policy "
        "for that step, or do nothing (generator: no child; debugger/downscaler: no change).",
    )
    memory: bool | None = Field(
        None,
        description="Keep a memory of the trajectory across iterations (default: navigator yes, "
        "generator no, as in CoLLM-NAS).",
    )
    proposals: int = Field(
        1, ge=1, le=16, description="generator with the llm policy: children its model writes per plan; "
        "with search.strategy = 'model' the score model keeps the one it predicts best, the others "
        "go to the trace with their predictions (other roles: must stay 1).",
    )

    proposals_in_one_answer: bool = Field(
        False, description="generator: ask for all `proposals` children in one answer (CoLLM-NAS asks for "
        "10-20 arch dicts at once), each read and checked on its own; else one request per child.",
    )

    @field_validator("proposals")
    @classmethod
    def _proposals_need_an_llm(cls, value: int, info: Any) -> int:
        if value > 1 and info.data.get("policy") != "llm":
            raise ValueError("proposals > 1 needs policy = 'llm' (the algorithmic Generator writes "
                             "the child its Navigator chose)")
        return value


class PhaseConfig(_Section):
    """PhaseNAS's two phases: exploration on a small model, refinement on a large one."""

    enabled: bool = True
    transition_score: float | None = Field(
        None, description="Refine once any candidate scores this much (PhaseNAS gamma_trans)."
    )
    transition_after: float = Field(
        0.5, ge=0, le=1, description="Without transition_score: refine after this budget fraction."
    )
    exploration_model: str | None = Field(None, description="LLM for the exploration phase.")
    refinement_model: str | None = Field(None, description="LLM for the refinement phase.")


class WorkflowConfig(_Section):
    """Which roles run and in what order (nodes come from the agent registry)."""

    navigator: str = "navigator"
    pipeline: list[str] = Field(
        default_factory=lambda: ["generator", "verifier"],
        description="Roles run in order for each child; the last one must route (the verifier).",
    )
    on_fails_to_run: str = "debugger"
    on_over_budget: str = "downscaler"
    max_debug: int = Field(2, ge=0)
    max_downscale: int = Field(4, ge=0)
    min_layers: int = Field(2, ge=1, description="Structural check: a child must be this deep.")
    reask_on_structure: bool = Field(
        True,
        description="The llm Generator puts its child through the structural check (changed vs its "
        "parent, deep enough, not a duplicate) and re-asks its model in the same conversation with "
        "what was wrong (within roles.generator.llm.max_retries), as FairNAD repeats generation with "
        "a new prompt; false: such a child goes to the Verifier, which discards it.",
    )

    @field_validator("pipeline")
    @classmethod
    def _pipeline_not_empty(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("the pipeline needs at least a generator and a verifier")
        if len(set(value)) != len(value):
            raise ValueError(f"a role appears twice in {value}")
        return value

    def roles(self) -> list[str]:
        return [self.navigator, *self.pipeline, self.on_fails_to_run, self.on_over_budget]


class KnowledgeConfig(_Section):
    """The design-idea store (archsmith.knowledge) and how the Navigator draws from it."""

    use: bool = Field(
        False, description="The Navigator draws one idea per child from the store (fair sampling)."
    )
    path: str | None = Field(
        None, description="Store directory (default: the per-user data directory, see README)."
    )
    embedding: Literal["minilm", "hashing"] = Field(
        "minilm", description="minilm: packaged all-MiniLM-L6-v2; hashing: lexical, no model."
    )
    tree: str | None = Field(None, description="Attribute tree TOML (default: the packaged tree).")
    sampling: Literal["main_category", "uniform", "granularity", "sub_category"] = Field(
        "main_category", description="Fairness level of idea sampling (FairNAD Table 6)."
    )
    target: Literal["performance", "efficiency"] | None = Field(
        None, description="Draw only ideas of this target (default: both)."
    )
    similar_in_refinement: int = Field(
        5, ge=0, description="Refinement phase: draw among the N ideas most like the best "
        "candidate's idea (0: keep fair sampling).",
    )
    merge_threshold: float = Field(
        0.88, gt=0, le=1, description="Cosine similarity at which a new idea merges into a stored one "
        "(all-MiniLM-L6-v2: paraphrases score about 0.9, distinct starter ideas at most 0.8)."
    )
    max_paper_chars: int = Field(12000, ge=500, description="Method-section characters sent to the LLM.")
    llm: LLMSettings = Field(default_factory=LLMSettings, description="The model that ingests papers.")


class TrackingConfig(_Section):
    """Experiment tracking (graph/tracking.py): an optional MLflow run per Archsmith run."""

    mlflow: bool = Field(
        False, description="Log the config, every candidate's score/params/FLOPs and the best candidate "
        "and report to MLflow (needs pip install 'archsmith[tracking]').",
    )
    mlflow_uri: str | None = Field(
        None, description="MLflow tracking URI (default: a local SQLite store in mlruns/ beside runs_dir).",
    )
    experiment: str = Field("archsmith", min_length=1, description="The MLflow experiment of the runs.")


class ArchsmithConfig(_Section):
    name: str = Field("search", description="A label for the run (part of its directory name).")
    seed: int = 0
    runs_dir: str = "runs"
    space: SpaceConfig = Field(default_factory=SpaceConfig)
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    evaluator: EvaluatorConfig = Field(default_factory=EvaluatorConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)
    parallel: ParallelConfig = Field(default_factory=ParallelConfig)
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig)
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig)
    phases: PhaseConfig = Field(default_factory=PhaseConfig)
    workflow: WorkflowConfig = Field(default_factory=WorkflowConfig)
    roles: dict[str, RoleConfig] = Field(default_factory=dict)
    knowledge: KnowledgeConfig = Field(default_factory=KnowledgeConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    prompts_dir: str | None = Field(
        None, description="Directory of prompt overrides: <dir>/<role>/<name>.md replaces ours."
    )

    @model_validator(mode="after")
    def _fill_roles(self) -> ArchsmithConfig:
        for role in {*BUILTIN_ROLES, *self.workflow.roles()}:
            self.roles.setdefault(role, RoleConfig())
        for role, settings in self.roles.items():
            if settings.proposals > 1 and role != self.workflow.pipeline[0]:
                raise ValueError(f"roles.{role}.proposals: only the generator writes several children per plan")
        return self

    def role(self, name: str) -> RoleConfig:
        return self.roles.get(name) or RoleConfig()

    def to_toml(self) -> str:
        return tomli_w.dumps(self.model_dump(mode="json", exclude_none=True))


# ----------------------------------------------------------------------------- loading


def default_config_text() -> str:
    """The embedded default configuration (what `archsmith run` uses with no file)."""
    return resources.files("archsmith.graph").joinpath("defaults/default.toml").read_text("utf-8")


def parse_override(item: str) -> tuple[list[str], Any]:
    """``budget.params_m=0.5`` -> (["budget", "params_m"], 0.5); the value is read as TOML."""
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected KEY=VALUE, e.g. budget.params_m=0.5")
    key, raw = item.split("=", 1)
    path = [part.strip() for part in key.strip().split(".")]
    if not all(path):
        raise ConfigError(f"override {item!r}: empty part in the key {key!r}")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()  # a bare word such as llm or template
    return path, value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for item in overrides:
        path, value = parse_override(item)
        node = data
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a table")
            node = child
        node[path[-1]] = value
    return data


def _section_model(annotation: Any) -> type[BaseModel] | None:
    """The config section class an annotation holds (``X``, ``X | None``), or None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def _fields_at(loc: tuple[Any, ...]) -> list[str] | None:
    """The field names of the section that holds the key at ``loc`` (None: a free-form table)."""
    model: type[BaseModel] = ArchsmithConfig
    parts = list(loc[:-1])
    while parts:
        part = parts.pop(0)
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        annotation = field.annotation
        if get_origin(annotation) is dict:  # roles.<name>: skip the free key
            annotation = get_args(annotation)[1]
            if parts:
                parts.pop(0)
        section = _section_model(annotation)
        if section is None:
            return None
        model = section
    return list(model.model_fields)


def _sections_with(name: str) -> list[str]:
    """Dotted sections (under the top level) that have a field ``name``."""
    found: list[str] = []

    def walk(model: type[BaseModel], prefix: str, depth: int) -> None:
        for key, field in model.model_fields.items():
            if key == name and prefix:
                found.append(prefix)
            section = _section_model(field.annotation)
            if section is not None and depth < 3:
                free = "<name>." if get_origin(field.annotation) is dict else ""  # roles.<name>
                walk(section, f"{prefix}{key}.{free}", depth + 1)

    walk(ArchsmithConfig, "", 0)
    return [section.rstrip(".") for section in found]


def _did_you_mean(loc: tuple[Any, ...]) -> str:
    """For an unknown key: the closest field of its section, or the sections that have it."""
    import difflib

    key = str(loc[-1])
    names = _fields_at(loc)
    if names is None:
        return ""
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
    parent = ".".join(str(part) for part in loc[:-1])
    if close:
        return f"; did you mean {parent + '.' if parent else ''}{close[0]}?"
    role = str(loc[1]) if len(loc) > 2 and loc[0] == "roles" else "<name>"
    elsewhere = [section.replace("roles.<name>", f"roles.{role}") for section in _sections_with(key)]
    if elsewhere:
        return f"; {key} belongs in {' or '.join(f'[{s}]' for s in elsewhere)}"
    return f"; known keys here: {', '.join(names)}"


def _format_validation_error(error: ValidationError, source: str) -> str:
    lines = [f"invalid configuration ({source}):"]
    for issue in error.errors():
        where = ".".join(str(part) for part in issue["loc"]) or "(top level)"
        hint = _did_you_mean(tuple(issue["loc"])) if issue["type"] == "extra_forbidden" and issue["loc"] else ""
        lines.append(f"  {where}: {issue['msg']}{hint}")
    return "\n".join(lines)


def config_from_dict(data: dict[str, Any], source: str = "dict") -> ArchsmithConfig:
    try:
        return ArchsmithConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_format_validation_error(error, source)) from None


def load_config(
    path: str | Path | None = None, overrides: list[str] | None = None
) -> ArchsmithConfig:
    """Load a TOML file (or the embedded default when ``path`` is None) and apply overrides."""
    if path is None:
        text, source = default_config_text(), "embedded default"
    else:
        file = Path(path)
        if not file.is_file():
            raise ConfigError(f"config file not found: {file}")
        text, source = file.read_text("utf-8"), str(file)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{source}: not valid TOML: {error}") from None
    apply_overrides(data, overrides or [])
    return config_from_dict(data, source)
