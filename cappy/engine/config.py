"""Typed configuration of a job: a dataclass whose fields are the job's settings, and the
command line made from it.

Each field is declared with `setting(default, help, ...)`; `build_parser` turns the fields
into flags (`--name`, its type, default, choices and help), and `parse_config` returns the
dataclass, so the library takes a typed object rather than an argparse namespace, a job
saves `asdict(config)` with its results, and code that runs a job itself (the demo, tests)
builds the dataclass instead of an argv list.
"""

import argparse
import dataclasses
import math


# The fewest tokens a pair's row can have: RoBERTa's four special tokens and one token of
# each side. The most is what the model's position table holds (checked once it is read).
MIN_MAX_LENGTH = 6

# The default of a setting that must be given (its flag is required); a dataclass with
# such fields after ones with defaults is declared `kw_only=True`.
REQUIRED = dataclasses.MISSING


def setting(default, help, *, choices=None, flag=None, type=None, group=None, at_least=None,
            at_most=None, rest=False, repeat=None):
    """A field of a job's configuration, and how its flag reads.

    `flag` names a flag that differs from `--field_name`, or several (the first is its
    name, the others aliases: an earlier release's spelling); a bool field given as
    `flag="--quiet"` defaults to True and the flag turns it off; `type` converts the
    flag's text where the default does not say (None or REQUIRED defaults); `group`
    titles the flag's group in --help. `at_least` / `at_most` bound a number (checked by
    `check_config`, before any work; a float must also be finite). A `rest` field (a
    tuple) has no flag: it takes the words the command does not know, in order (flags a
    command passes on to the commands it runs; those after `--` too), and the command's
    own flags are then never abbreviated, so that none is taken for a prefix of another's.
    A `repeat` field (a tuple) takes its flag any number of times, each a value such as
    `repeat` shows (its metavar in --help).
    """
    return dataclasses.field(default=default, metadata={
        "help": help, "choices": choices, "flag": flag, "type": type, "group": group,
        "at_least": at_least, "at_most": at_most, "rest": rest, "repeat": repeat})


def flag_names(field):
    """A field's flags: its own name first, then its aliases."""
    flag = field.metadata.get("flag") or f"--{field.name}"
    return (flag,) if isinstance(flag, str) else tuple(flag)


def rest_field(config_class):
    """The name of `config_class`'s `rest` field, or None."""
    names = [f.name for f in dataclasses.fields(config_class) if f.metadata.get("rest")]
    return names[0] if names else None


def check_number(flag, value, at_least=None, at_most=None):
    """One line naming the flag when `value` is not a finite number within the bounds."""
    from cappy.engine.errors import CappyError

    if value is None:
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise CappyError(f"{flag} must be a finite number, got {value}")
    if at_least is not None and value < at_least:
        raise CappyError(f"{flag} must be at least {at_least}, got {value}")
    if at_most is not None and value > at_most:
        raise CappyError(f"{flag} must be at most {at_most}, got {value}")


def check_config(config):
    """Every bounded setting of `config` within its bounds (see `setting`)."""
    for field in dataclasses.fields(config):
        meta = field.metadata
        value = getattr(config, field.name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            check_number(flag_names(field)[0], value, meta.get("at_least"),
                         meta.get("at_most"))


def build_parser(config_class, description, prog=None, **parser_kwargs):
    """An ArgumentParser with one flag per field of `config_class`, defaults shown."""
    rest = rest_field(config_class)
    if rest:  # what becomes of the words it does not know, after the flags
        parser_kwargs.setdefault("allow_abbrev", False)
        parser_kwargs.setdefault("epilog", next(field.metadata["help"] for field in
                                                dataclasses.fields(config_class)
                                                if field.name == rest))
    parser = argparse.ArgumentParser(
        prog=prog, description=description,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter, **parser_kwargs)
    add_fields(parser, config_class)
    return parser


def add_fields(parser, config_class):
    """Add one flag per field of `config_class` to `parser`."""
    groups = {}
    fields = dataclasses.fields(config_class)  # a group's flags after the others
    for field in sorted(fields, key=lambda f: f.metadata.get("group") is not None):
        meta = field.metadata
        if meta.get("rest"):  # the words the parser does not know (parse_config)
            continue
        target = parser
        if meta.get("group"):
            target = groups.setdefault(meta["group"], parser.add_argument_group(meta["group"]))
        if isinstance(field.default, bool):
            flags = flag_names(field)
            action = "store_false" if field.default else "store_true"
            # A flag that turns a setting off would read "(default: True)"; `%(default).0s`
            # prints nothing and tells the help formatter not to add that.
            text = meta["help"] + ("%(default).0s" if field.default else "")
            target.add_argument(*flags, dest=field.name, action=action, help=text)
            continue
        text = meta["help"]
        if meta.get("repeat"):  # collected into a tuple by parse_config
            target.add_argument(*flag_names(field), dest=field.name, action="append",
                                default=None, metavar=meta["repeat"], help=text)
            continue
        if "(default:" in text:  # the help says its default itself: no second one
            text += "%(default).0s"
        required = field.default is REQUIRED
        kind = meta.get("type") or (str if required or field.default is None
                                    else type(field.default))
        extra = {"required": True} if required else {"default": field.default}
        target.add_argument(*flag_names(field), dest=field.name, type=kind,
                            choices=meta.get("choices"), help=text, **extra)


def parse_config(config_class, parser, argv=None):
    """Parse `argv` (sys.argv when None) with `parser` into a `config_class`."""
    rest = rest_field(config_class)
    if rest:
        namespace, unknown = parser.parse_known_args(argv)
        setattr(namespace, rest, tuple(unknown[1:] if unknown[:1] == ["--"] else unknown))
    else:
        namespace = parser.parse_args(argv)
    for field in dataclasses.fields(config_class):
        if field.metadata.get("repeat"):
            setattr(namespace, field.name, tuple(getattr(namespace, field.name) or ()))
    config = config_class(**{field.name: getattr(namespace, field.name)
                             for field in dataclasses.fields(config_class)})
    check_config(config)
    return config


def settings_of(config):
    """The configuration as saved with a job's results: field -> value, sorted by name."""
    return dict(sorted(dataclasses.asdict(config).items()))


def changed_settings(saved, current, keys=None):
    """`["key saved -> current", ...]` for the settings (all, or `keys`) that differ: the one
    rule for refusing to resume a run made with other settings."""
    keys = sorted(set(saved) | set(current)) if keys is None else keys
    return [f"{key} {saved.get(key)!r} -> {current.get(key)!r}" for key in keys
            if saved.get(key) != current.get(key)]
