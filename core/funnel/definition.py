"""A team's own funnel: rules from a TOML definition (`funnel.toml`), compiled once per engine.

Format (data/README.md documents it with data/examples/funnel.toml):

    format = 1
    unlisted_builtins = "first"   # built-ins the file does not list run first ("first") or not ("off")

    [[rule]]                      # one table per rule, in evaluation order
    code = "GAMBLING_DE"          # its reason code (UPPER_SNAKE); a built-in's code re-expresses it
    expr = 'ad.vertical == "gambling" and request.country in ["DE", "FR"]'   # true = fails
    stage = "eligibility"         # or "ranking": evaluated once pCTR and eCPM are known
    description = "..."           # optional
    enabled = true                # optional; false keeps the rule listed but off

    [[rule]]
    builtin = "GEO_MISMATCH"      # a built-in rule at this position (enabled = false: off)

    [[rule]]
    plugin = "recent_click_block" # a Python rule from entry-point group adlens.rules
    params = { hours = 24 }       # (core.funnel.plugins); code = "..." overrides its own code

    [ranker]                      # optional: the team's own early ranker (core.funnel.ranker_build)
    onnx = "ranker.onnx"          # + signature = "ranker.json" (relative to this file), or
                                  # plugin = "NAME" (+ params = {...}), entry-point group adlens.rankers

    [quotas]                      # optional: candidates a source contributes (two_tower's is K)
    popular_in_context = 200      # the version's quotas: over learned ones, under a what-if's

`load_definition(path)` parses and checks the file's shape; `compile_funnel(defn, fields)` checks
every expression against the fields (names, types, stage) and returns the `Funnel` the engine
runs. Every problem of a file is reported at once, as one ValidationError naming the rule, and
with line and column where the problem has a place. `Funnel.builtin()` is AdLens's own funnel.
"""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from core.common.errors import AdLensError, ArtifactError, ValidationError
from core.funnel.expr import Compiled, ExprError, compile_expr
from core.funnel.filters import RULES, Rule
from core.funnel.params import SOURCE_QUOTAS
from core.funnel.plugins import PluginRule, load_plugin
from core.funnel.reasons import BUILTIN_REASONS, ELIGIBILITY_REASONS, Reason, check_reason_code

FORMAT = 1
STAGES = ("eligibility", "ranking")
RULE_KEYS = frozenset({"code", "expr", "stage", "description", "enabled", "builtin", "plugin", "params"})
TOP_KEYS = frozenset({"format", "unlisted_builtins", "rule", "description", "ranker", "quotas"})
POST_ELIGIBILITY = frozenset({Reason.BELOW_CUTOFF.value, Reason.ADVERTISER_CAP.value})


@dataclass(frozen=True)
class RuleSpec:
    """One [[rule]] table: a built-in (expr and plugin None), an expression rule, or an
    entry-point rule (core.funnel.plugins)."""

    code: str
    expr: str | None
    stage: str = "eligibility"
    enabled: bool = True
    description: str = ""
    line: int | None = None  # where the rule's table starts in the file
    plugin: str | None = None
    params: tuple = ()  # the plugin's keyword arguments, as sorted (key, value) pairs


@dataclass(frozen=True)
class FunnelDefinition:
    """A parsed funnel.toml: the rules in order, plus the file's text and sha256."""

    rules: tuple[RuleSpec, ...]
    unlisted_builtins: str
    text: str
    sha256: str
    name: str = "funnel.toml"
    ranker: dict | None = None  # the [ranker] table as written (core.funnel.ranker_build reads it)
    folder: str | None = None  # the file's folder, for the [ranker] table's relative paths

    quotas: tuple[tuple[str, int], ...] = ()  # [quotas]: (source, count) pairs, sorted

    @property
    def custom_codes(self) -> tuple[str, ...]:
        return tuple(r.code for r in self.rules if r.code not in BUILTIN_REASONS)


class ExprRule(Rule):
    """A rule from a funnel definition: a compiled expression over the fields (core.funnel.fields)."""

    def __init__(self, code: str, compiled: Compiled, description: str = ""):
        self.code, self.compiled, self.description = code, compiled, description

    def fails(self, facts, pos, ctx):
        raise TypeError(f"{self.code} is an expression rule: call evaluate() with its Env (core.funnel.fields)")

    def evaluate(self, facts, pos, ctx, env) -> np.ndarray:
        return self.compiled.mask(env, len(pos))

    def describe(self, facts, p, ctx, env=None) -> str:
        head = f"{self.description}: " if self.description else ""
        if env is None:
            return f"{head}{self.compiled.text}"
        vals = []
        for name in self.compiled.fields:
            try:
                vals.append(f"{name} = {env.shown(name)!r}")
            except KeyError:
                vals.append(f"{name} = (not known at this stage)")
        return f"{head}{self.compiled.text}; " + ", ".join(vals)


@dataclass(frozen=True)
class Funnel:
    """The rules an engine runs: eligibility rules by code in default order (enabled ones in
    `order`, listed-but-off ones in `off`), and ranking-stage rules likewise."""

    rules: Mapping[str, Rule]
    order: tuple[str, ...]
    off: tuple[str, ...] = ()
    ranking: Mapping[str, ExprRule] = field(default_factory=dict)
    ranking_order: tuple[str, ...] = ()
    definition: FunnelDefinition | None = None

    @property
    def quotas(self) -> dict[str, int]:
        """The definition's [quotas] (source -> candidates); empty for the built-in funnel."""
        return dict(self.definition.quotas) if self.definition is not None else {}

    @classmethod
    def builtin(cls) -> "Funnel":
        return cls(dict(RULES), tuple(c.value for c in ELIGIBILITY_REASONS))

    @property
    def all_order(self) -> tuple[str, ...]:
        """Every eligibility rule in default order, off ones at their listed place."""
        return tuple(c for c in self.rules)

    @property
    def codes(self) -> tuple[str, ...]:
        """Every reason code this funnel can give (rules of both stages, then post-eligibility)."""
        return (*self.rules, *self.ranking, Reason.BELOW_CUTOFF.value, Reason.ADVERTISER_CAP.value)

    def describe(self) -> dict:
        d = self.definition
        plugins = {c: {"plugin": r.name, "entry_point": r.source} for c, r in self.rules.items()
                   if hasattr(r, "source") and hasattr(r, "rule")}
        return {"source": "builtin" if d is None else d.name, "sha256": None if d is None else d.sha256,
                "plugins": plugins,
                "eligibility": list(self.order), "off": list(self.off), "ranking": list(self.ranking_order),
                "custom": [] if d is None else list(d.custom_codes), "quotas": self.quotas}


def _line_of(text: str, code: str, i: int) -> int | None:
    """The line of the i-th [[rule]] table (1-based), for messages."""
    n = -1
    for ln, line in enumerate(text.splitlines(), 1):
        if line.strip().replace(" ", "").startswith("[[rule]]"):
            n += 1
            if n == i:
                return ln
    return None


def parse_definition(text: str, name: str = "funnel.toml") -> FunnelDefinition:
    """Parse a funnel definition's text; ValidationError lists every problem of its shape."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValidationError([f"{name}: TOML syntax error: {exc} (fix the file; see data/README.md)"]) from None
    problems: list[str] = []
    extra = sorted(set(raw) - TOP_KEYS)
    if extra:
        problems.append(f"{name}: unknown top-level key(s) {', '.join(extra)}; allowed: {', '.join(sorted(TOP_KEYS))}")
    if raw.get("format", FORMAT) != FORMAT:
        problems.append(f"{name}: format {raw.get('format')!r} is not supported (this AdLens reads format {FORMAT})")
    unlisted = raw.get("unlisted_builtins", "first")
    if unlisted not in ("first", "off"):
        problems.append(f"{name}: unlisted_builtins must be \"first\" or \"off\"; got {unlisted!r}")
    ranker = raw.get("ranker")
    if ranker is not None and not isinstance(ranker, dict):
        problems.append(f"{name}: ranker must be a [ranker] table (onnx + signature, or plugin)")
    tables = raw.get("rule", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        problems.append(f"{name}: rules are [[rule]] tables")
        tables = []
    specs: list[RuleSpec] = []
    seen: dict[str, int] = {}
    for i, t in enumerate(tables):
        line = _line_of(text, "", i)
        where = f"{name}, rule {i + 1}" + (f" (line {line})" if line else "")
        bad = sorted(set(t) - RULE_KEYS)
        if bad:
            problems.append(f"{where}: unknown key(s) {', '.join(bad)}; allowed: {', '.join(sorted(RULE_KEYS))}")
        if "builtin" in t:
            code = t["builtin"]
            if "expr" in t or "code" in t:
                problems.append(f"{where}: a builtin rule takes no code or expr (to re-express built-in {code}, "
                                f"write code = \"{code}\" with an expr)")
            if code not in {c.value for c in ELIGIBILITY_REASONS}:
                problems.append(f"{where}: unknown built-in rule {code!r}; built-ins: {', '.join(ELIGIBILITY_REASONS)}")
                continue
            expr = None
        elif "plugin" in t:
            if "expr" in t:
                problems.append(f"{where}: a plugin rule takes no expr")
            params = t.get("params", {})
            if not isinstance(params, dict):
                problems.append(f"{where}: params must be a table, e.g. params = {{ hours = 24 }}")
                continue
            try:
                _, _, own = load_plugin(str(t["plugin"]), params)
            except AdLensError as exc:
                problems.append(f"{where}: {exc}")
                continue
            code, expr = t.get("code", own), None
            if (why := check_reason_code(code)) is not None:
                problems.append(f"{where} (plugin {t['plugin']}): {why}")
                continue
            if code in BUILTIN_REASONS:
                problems.append(f"{where}: plugin rule code {code} is a built-in's; give it code = \"...\" of its own")
                continue
        else:
            code, expr = t.get("code"), t.get("expr")
            if (why := check_reason_code(code)) is not None:
                problems.append(f"{where}: {why}")
                continue
            if code in POST_ELIGIBILITY:
                problems.append(f"{where}: {code} is AdLens's own post-eligibility code; choose another code")
                continue
            if not isinstance(expr, str) or not expr.strip():
                problems.append(f"{where} ({code}): needs expr = \"...\" (true = the candidate fails the rule)")
                continue
        where = f"{where} ({code})"
        if code in seen:
            problems.append(f"{where}: duplicate reason code {code} (also rule {seen[code] + 1}); every rule needs its own code")
            continue
        seen[code] = i
        stage = t.get("stage", "eligibility")
        if stage not in STAGES:
            problems.append(f"{where}: stage must be one of {', '.join(STAGES)}; got {stage!r}")
        if expr is None and stage != "eligibility":
            problems.append(f"{where}: built-in and plugin rules run at the eligibility stage")
        enabled = t.get("enabled", True)
        if not isinstance(enabled, bool):
            problems.append(f"{where}: enabled must be true or false; got {enabled!r}")
        desc = t.get("description", "")
        if not isinstance(desc, str):
            problems.append(f"{where}: description must be text")
            desc = ""
        plugin = str(t["plugin"]) if "plugin" in t else None
        specs.append(RuleSpec(code, expr, stage, bool(enabled), desc, line, plugin,
                              tuple(sorted((t.get("params") or {}).items())) if plugin else ()))
    quotas = _parse_quotas(raw.get("quotas", {}), name, problems)
    if problems:
        raise ValidationError(problems)
    sha = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return FunnelDefinition(tuple(specs), unlisted, text, sha, name, ranker, quotas=quotas)


def _parse_quotas(table, name: str, problems: list[str]) -> tuple[tuple[str, int], ...]:
    """[quotas] as sorted (source, count) pairs; appends what is wrong to `problems`."""
    if not isinstance(table, dict):
        problems.append(f"{name}: [quotas] is a table of source = count, e.g. popular_in_context = 200")
        return ()
    known = [s for s in SOURCE_QUOTAS if s != "two_tower"]
    out = []
    for source, count in sorted(table.items()):
        if source == "two_tower":
            problems.append(f"{name}: [quotas] two_tower: its quota is K (build or run with --k); remove it")
        elif source not in SOURCE_QUOTAS:
            problems.append(f"{name}: [quotas] unknown source {source!r}; sources with a quota: {', '.join(known)}")
        elif isinstance(count, bool) or not isinstance(count, int) or count < 1:
            problems.append(f"{name}: [quotas] {source} must be a positive whole number of candidates; got {count!r}")
        else:
            out.append((str(source), int(count)))
    return tuple(out)


def check_quota_sources(funnel: Funnel, sources, version: str) -> None:
    """ValidationError when the funnel's [quotas] name a source the version has not built."""
    missing = sorted(set(funnel.quotas) - set(sources))
    if missing:
        src = funnel.definition.name if funnel.definition is not None else FUNNEL_FILE
        raise ValidationError([f"{src}: [quotas] names source(s) {', '.join(missing)} that version {version} does "
                               f"not have; its sources: {', '.join(sources) or 'none'} (remove the quota or rebuild "
                               "the version with that source)"])


def load_definition(path: str | Path) -> FunnelDefinition:
    """Read and parse a funnel definition file (see the module docstring)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValidationError([f"funnel definition {p} does not exist"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValidationError([f"funnel definition {p} cannot be read: {exc}"]) from None
    return replace(parse_definition(text, p.name), folder=str(p.parent))


def ordered_specs(defn: FunnelDefinition) -> tuple[RuleSpec, ...]:
    """The definition's rules in the order the engine runs them: eligibility rules (built-ins the
    file does not list first, with unlisted_builtins = "first"), then ranking-stage rules."""
    listed = {r.code for r in defn.rules}
    unlisted = tuple(RuleSpec(c.value, None) for c in ELIGIBILITY_REASONS
                     if defn.unlisted_builtins == "first" and c.value not in listed)
    return (*unlisted, *(r for r in defn.rules if r.stage != "ranking"),
            *(r for r in defn.rules if r.stage == "ranking"))


def compile_funnel(defn: FunnelDefinition | None, fields) -> Funnel:
    """The Funnel a definition describes, every expression compiled against `fields`
    (a core.funnel.fields.FieldTable); ValidationError lists every problem."""
    if defn is None:
        return Funnel.builtin()
    problems: list[str] = []
    elig: dict[str, Rule] = {}
    off: list[str] = []
    ranking: dict[str, ExprRule] = {}
    rank_off: list[str] = []
    for r in ordered_specs(defn):
        where = f"{defn.name}, rule {r.code}" + (f" (line {r.line})" if r.line else "")
        if r.plugin is not None:
            rule, source, _ = load_plugin(r.plugin, dict(r.params))
            elig[r.code] = PluginRule(r.plugin, source, rule, r.code)
            if not r.enabled:
                off.append(r.code)
            continue
        if r.expr is None:
            elig[r.code] = RULES[Reason(r.code)]
            if not r.enabled:
                off.append(r.code)
            continue
        try:
            comp = compile_expr(r.expr, fields.specs)
        except ExprError as exc:
            pos = f" (expression line {exc.line}, column {exc.col})" if exc.line is not None else ""
            problems.append(f"{where}: {exc.message}{pos}; in {r.expr.strip()!r}")
            continue
        if comp.stage == "ranking" and r.stage != "ranking":
            late = ", ".join(f for f in comp.fields if fields.specs[f].stage == "ranking")
            problems.append(f"{where}: {late} is known only after early ranking; set stage = \"ranking\"")
            continue
        rule = ExprRule(r.code, comp, r.description)
        (ranking if r.stage == "ranking" else elig)[r.code] = rule
        if not r.enabled:
            (rank_off if r.stage == "ranking" else off).append(r.code)
    if problems:
        raise ValidationError(problems)
    return Funnel(elig, tuple(c for c in elig if c not in off), tuple(off), ranking,
                  tuple(c for c in ranking if c not in rank_off), defn)


FUNNEL_FILE = "funnel.toml"


def check_against_catalog(defn: FunnelDefinition, catalog, ad_ids) -> Funnel:
    """Compile `defn` against the fields `catalog` has (ads at `ad_ids`): the build-time check."""
    from core.funnel.ad_facts import AdFacts
    from core.funnel.fields import FieldTable

    facts = AdFacts.build(catalog, ad_ids)
    return compile_funnel(defn, FieldTable.build(facts, catalog))


def funnel_builder(defn: FunnelDefinition):
    """A build-time artifact builder (core.index.versions) that checks `defn` against the
    version's catalog, copies it into the version as funnel.toml (checksummed with every file)
    and records it in the manifest's "funnel" section, so the version always replays it."""

    def funnel_artifact_builder(ctx, tmp: Path) -> dict:
        funnel = check_against_catalog(defn, ctx.catalog, ctx.ad_ids)
        if funnel.quotas:  # the sources builder ran first: its folders name the version's sources
            built = sorted(p.name for p in (tmp / "sources").iterdir() if p.is_dir()) \
                if (tmp / "sources").is_dir() else []
            check_quota_sources(funnel, ["two_tower", *built], getattr(ctx, "name", "being built"))
        (tmp / FUNNEL_FILE).write_bytes(defn.text.encode("utf-8"))
        return {"funnel": {"file": FUNNEL_FILE, "sha256": defn.sha256, "source": defn.name,
                           **{k: v for k, v in funnel.describe().items() if k not in ("source", "sha256")}}}
    return funnel_artifact_builder


def version_definition(version) -> FunnelDefinition | None:
    """The funnel definition a version was built with (None: AdLens's built-in funnel)."""
    section = version.manifest.get("funnel") if getattr(version, "manifest", None) is not None else None
    return definition_at(version.path, section) if section else None


def definition_at(version_dir: str | Path, section: dict | None) -> FunnelDefinition | None:
    """The funnel definition in `version_dir` that its manifest's "funnel" `section` records,
    checked against the recorded sha256 (None: no section, AdLens's built-in funnel)."""
    if not section:
        return None
    path = Path(version_dir) / section.get("file", FUNNEL_FILE)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ArtifactError(f"{path}: the version's funnel definition is missing ({exc})") from exc
    defn = parse_definition(text, str(section.get("source") or FUNNEL_FILE))
    if defn.sha256 != section.get("sha256"):
        raise ArtifactError(f"{path}: sha256 {defn.sha256[:12]}… does not match the manifest's "
                            f"{str(section.get('sha256'))[:12]}…; the version was modified")
    return defn


def definition_for_build(settings, value: str | None) -> FunnelDefinition | None:
    """The definition `build-index` records: `value` (a file; "builtin" for AdLens's own rules),
    else `<workspace>/funnel.toml` when the workspace has one, else None. Checked against the
    workspace's catalog now, before anything is built (ValidationError lists every problem)."""
    if value == "builtin":
        return None
    path = Path(value) if value else Path(settings.workspace) / FUNNEL_FILE
    if not value and not path.is_file():
        return None
    defn = load_definition(path)
    from core.store.catalog import load_catalog
    from core.store.db import make_engine

    db = make_engine(settings.db_url)
    try:
        catalog = load_catalog(db, with_impressions=False)
    finally:
        db.dispose()
    check_against_catalog(defn, catalog, catalog.ads["ad_id"].to_numpy(dtype=object))
    return defn
