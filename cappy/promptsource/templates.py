"""PromptSource templates: loading the YAML files and rendering them like PromptSource 0.2.3.

PromptSource (Bach et al., 2022) writes each prompt as Jinja text with `|||` between
the input and the target, plus an optional Jinja expression for the answer choices
(`"Yes ||| No"`), rendered per example and visible to the template as
`answer_choices`. PromptSource 0.2.3 no longer installs on Python >= 3.10, but its
sdist carries every `templates.yaml`; the ones this project needs are shipped in
`cappy/data/promptsource_templates/` (Apache-2.0, see the LICENSE there).

Rendering follows `promptsource.templates.Template.apply` of 0.2.3:
- a plain `jinja2.Environment` (no autoescape, undefined variables render empty), with
  the global `zip` and the filters `choice`, `most_frequent` and `highlight`;
- every `}}` of the template becomes `| string | truncate(2048) }}` (PromptSource's
  default `truncate=True`: long fields are cut at a word boundary with "...");
- `|||` inside string fields of the example is protected while rendering, so only the
  template's own separators split the output; each part and each choice is stripped;
- the answer choices are rendered from the example alone, then passed to the template.

One deliberate difference: PromptSource's `choice` filter draws from Python's global
random state, so its output changes between runs. Here it draws from a generator seeded
by the template id and the example, so the same example always renders the same way.

PromptSource itself does not rename fields; T0's pipeline first replaces `-` by `_` in
field names (`hyphens_to_underscores`) before rendering.
"""

import collections
import contextvars
import dataclasses
import functools
import hashlib
import json
import os
import random
import tarfile

import jinja2
import yaml

from cappy.engine.errors import CappyError

TEMPLATES_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data",
                             "promptsource_templates")
TEMPLATE_FILENAME = "templates.yaml"
SEPARATOR = "|||"
TEXT_VAR_LENGTH = 2048  # PromptSource's cut-off for a rendered variable, in characters
# Stands in for `|||` inside the example while rendering; 32 characters like PromptSource's
# own token, so that the 2048-character cut falls at the same place
_PIPE_PLACEHOLDER = "bf7a344e4df901a4b36f0803e6c20a9f"


@dataclasses.dataclass(frozen=True)
class Template:
    dataset: str                 # e.g. "super_glue"
    subset: str | None           # e.g. "rte"; None when the dataset has no subset
    name: str                    # the template's name
    id: str                      # the template's uuid
    jinja: str                   # "input ||| target" Jinja text
    answer_choices: str | None   # Jinja text of the answer choices ("a ||| b"), or None
    original_task: bool | None   # metadata.original_task
    choices_in_prompt: bool | None
    metrics: tuple               # metadata.metrics
    reference: str | None = None  # who wrote it / which paper

    @property
    def where(self):
        """`dataset/subset template 'name'`, for messages."""
        source = self.dataset if self.subset is None else f"{self.dataset}/{self.subset}"
        return f"{source} template '{self.name}'"


@dataclasses.dataclass(frozen=True)
class RenderedPrompt:
    instruction: str             # rendered input (stripped)
    target: str | None           # rendered target (stripped); None when the template yields none
    answer_choices: list | None  # rendered choices, or None when the template has none


# ---------------------------------------------------------------------------- loading

class _TemplateLoader(yaml.SafeLoader):
    """SafeLoader that also reads PromptSource's `!Template` and `!TemplateMetadata` tags."""


def _construct_tagged_mapping(loader, node):
    return dict(loader.construct_mapping(node, deep=True))


_TemplateLoader.add_constructor("!Template", _construct_tagged_mapping)
_TemplateLoader.add_constructor("!TemplateMetadata", _construct_tagged_mapping)


def _optional_str(value):
    return None if value is None else str(value)


def _template_from_yaml(dataset, subset, key, fields, source):
    if not isinstance(fields, dict) or "jinja" not in fields or "name" not in fields:
        raise CappyError(f"{source}: template {key!r} has no 'name' or 'jinja'")
    metadata = fields.get("metadata") or {}
    return Template(
        dataset=dataset,
        subset=subset,
        name=str(fields["name"]),
        id=str(fields.get("id", key)),
        jinja=str(fields["jinja"]),
        answer_choices=_optional_str(fields.get("answer_choices")),
        original_task=metadata.get("original_task"),
        choices_in_prompt=metadata.get("choices_in_prompt"),
        metrics=tuple(metadata.get("metrics") or ()),
        reference=_optional_str(fields.get("reference")),
    )


def parse_templates(text, dataset, subset=None, source="<templates.yaml>"):
    """Templates of one `templates.yaml` text, sorted by name."""
    try:
        document = yaml.load(text, Loader=_TemplateLoader)
    except yaml.YAMLError as error:
        raise CappyError(f"{source}: not valid YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(document, dict) or not isinstance(document.get("templates"), dict):
        raise CappyError(f"{source}: no 'templates' mapping")
    templates = [_template_from_yaml(dataset, subset, key, fields, source)
                 for key, fields in document["templates"].items()]
    return sorted(templates, key=lambda template: template.name)


def _relative_yaml_path(dataset, subset):
    parts = [dataset] + ([subset] if subset is not None else []) + [TEMPLATE_FILENAME]
    return "/".join(parts)


def _read_from_sdist(sdist_path, relative):
    suffix = "/promptsource/templates/" + relative
    with tarfile.open(sdist_path, "r:*") as archive:
        for member in archive.getmembers():
            if member.isfile() and member.name.endswith(suffix):
                return archive.extractfile(member).read().decode("utf-8"), member.name
    return None, None


@functools.lru_cache(maxsize=None)
def _load_cached(dataset, subset, templates_dir, modified):
    del modified  # part of the cache key only: an edited file is read again
    relative = _relative_yaml_path(dataset, subset)
    name = dataset if subset is None else f"{dataset}/{subset}"
    if os.path.isfile(templates_dir) and templates_dir.endswith((".tar.gz", ".tgz", ".tar")):
        text, member = _read_from_sdist(templates_dir, relative)
        if text is None:
            raise CappyError(f"{templates_dir}: no PromptSource templates for {name} "
                             f"(looked for .../promptsource/templates/{relative})")
        return tuple(parse_templates(text, dataset, subset, f"{templates_dir}:{member}"))
    path = os.path.join(templates_dir, *relative.split("/"))
    if not os.path.isfile(path):
        raise CappyError(f"no PromptSource templates for {name}: {path} not found")
    with open(path, encoding="utf-8") as file:
        return tuple(parse_templates(file.read(), dataset, subset, path))


def load_templates(dataset, subset=None, templates_dir=None):
    """All templates of `dataset` (and `subset`), sorted by name.

    `templates_dir` is a folder laid out like `promptsource/templates/` (default: the
    templates shipped with this package) or the path of the promptsource-0.2.3 sdist
    (`.tar.gz`).
    """
    templates_dir = os.path.abspath(templates_dir or TEMPLATES_DIR)
    if not os.path.exists(templates_dir):
        raise CappyError(f"{templates_dir}: templates folder or sdist not found")
    relative = os.path.join(templates_dir, *_relative_yaml_path(dataset, subset).split("/"))
    modified = os.path.getmtime(relative if os.path.isfile(relative) else templates_dir)
    return list(_load_cached(dataset, subset, templates_dir, modified))


def available_template_sets(templates_dir=None):
    """(dataset, subset) pairs that have a `templates.yaml` in a templates folder, sorted.

    A dataset under a user folder (PromptSource's `Zaid/coqa_expanded`) is named with
    its user prefix, as PromptSource does.
    """
    root = os.path.abspath(templates_dir or TEMPLATES_DIR)
    found = []
    for folder, _, files in os.walk(root):
        if TEMPLATE_FILENAME not in files:
            continue
        parts = os.path.relpath(folder, root).split(os.sep)
        if len(parts) == 1:
            found.append((parts[0], None))
        elif len(parts) == 2 and os.path.isfile(os.path.join(root, parts[0], TEMPLATE_FILENAME)):
            found.append((f"{parts[0]}/{parts[1]}", None))  # a user folder's dataset
        elif len(parts) == 2:
            found.append((parts[0], parts[1]))
        else:
            found.append(("/".join(parts[:-1]), parts[-1]))
    return sorted(found, key=lambda pair: (pair[0], pair[1] or ""))


def is_original_task_with_choices(template):
    """T0's evaluation filter: the template asks the dataset's own task and has answer choices."""
    return template.original_task is True and bool(template.answer_choices)


def hyphens_to_underscores(example):
    """Field names with `-` renamed with `_`, as T0's pipeline does before rendering."""
    return {key.replace("-", "_"): value for key, value in example.items()}


# ---------------------------------------------------------------------------- rendering

class _RenderState:
    """What the `choice` filter needs to draw reproducibly during one render."""

    def __init__(self, template, example):
        self.template = template
        self.example = example
        self.rng = None

    def random(self):
        if self.rng is None:
            material = json.dumps([self.template.id, self.example], sort_keys=True,
                                  ensure_ascii=False, default=repr)
            seed = int.from_bytes(hashlib.sha256(material.encode("utf-8")).digest()[:8], "big")
            self.rng = random.Random(seed)
        return self.rng


_render_state = contextvars.ContextVar("cappy_promptsource_render_state", default=None)


def _choice(items):
    state = _render_state.get()
    rng = state.random() if state is not None else random.Random(0)
    return rng.choice(items)


def _most_frequent(items):
    """The items that occur most often, in order of first occurrence; None for no items."""
    if not items:
        return None
    counts = collections.Counter(items)
    top = max(counts.values())
    return [item for item, count in counts.items() if count == top]


def _highlight(text):
    return "<span style='color: #F08080'>" + text + "</span>"


def _make_environment():
    environment = jinja2.Environment(loader=jinja2.BaseLoader())
    environment.globals["zip"] = zip
    environment.filters["choice"] = _choice
    environment.filters["most_frequent"] = _most_frequent
    environment.filters["highlight"] = _highlight
    return environment


_ENVIRONMENT = _make_environment()


@functools.lru_cache(maxsize=4096)
def _compile(text):
    return _ENVIRONMENT.from_string(text)


def _protect_pipes(example):
    return {key: value.replace(SEPARATOR, _PIPE_PLACEHOLDER) if isinstance(value, str) else value
            for key, value in example.items()}


def _restore_pipes(text):
    return text.replace(_PIPE_PLACEHOLDER, SEPARATOR)


def _with_truncation(jinja_text):
    # PromptSource rewrites the template text itself, so a filter written at the end of an
    # expression ends up before the cut, exactly as there
    return jinja_text.replace("}}", f" | string | truncate({TEXT_VAR_LENGTH}) }}}}")


def render_answer_choices(template, example):
    """The template's answer choices for `example` (stripped), or None when it has none."""
    if template.answer_choices is None:
        return None
    protected = _protect_pipes(example)
    token = _render_state.set(_RenderState(template, example))
    try:
        text = _compile(template.answer_choices).render(**protected)
    except Exception as error:  # any failure inside Jinja is a problem of this template/example
        raise CappyError(f"{template.where}: cannot render answer choices "
                         f"({type(error).__name__}: {error})") from None
    finally:
        _render_state.reset(token)
    return [_restore_pipes(choice.strip()) for choice in text.split(SEPARATOR)]


def render(template, example, truncate=True):
    """Render `template` on `example` (a dict of dataset fields) like PromptSource 0.2.3.

    The output is split on the template's `|||`: the first part is the instruction, the
    second the target. `target` is None when there is no second part, when it renders
    empty (e.g. an unlabelled example), or when the output has more than two parts; T0
    drops such examples. `truncate=False` keeps fields whole (PromptSource's
    `apply(truncate=False)`).
    """
    if "answer_choices" in example:
        raise CappyError(f"{template.where}: the example has a field named 'answer_choices', "
                         "which the template reserves for its choices")
    answer_choices = render_answer_choices(template, example)
    jinja_text = _with_truncation(template.jinja) if truncate else template.jinja
    variables = _protect_pipes(example)
    variables["answer_choices"] = answer_choices
    token = _render_state.set(_RenderState(template, example))
    try:
        text = _compile(jinja_text).render(**variables)
    except Exception as error:  # any failure inside Jinja is a problem of this template/example
        raise CappyError(f"{template.where}: cannot render "
                         f"({type(error).__name__}: {error})") from None
    finally:
        _render_state.reset(token)
    parts = [_restore_pipes(part).strip() for part in text.split(SEPARATOR)]
    target = parts[1] if len(parts) == 2 and parts[1] else None
    return RenderedPrompt(instruction=parts[0], target=target, answer_choices=answer_choices)
