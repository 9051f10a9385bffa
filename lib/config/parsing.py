"""Small readers every configuration source shares: boolean words, whole numbers, YAML with one-line errors, one-line text."""
from __future__ import annotations

from typing import Any, Mapping

from lib.errors import ConfigError

# Three boolean vocabularies, because three different readers define them:
# litestream.yml is read by Go's yaml.v2, which takes YAML 1.1's words (case as listed);
YAML_TRUE_WORDS = frozenset("y Y yes Yes YES true True TRUE on On ON".split())

YAML_FALSE_WORDS = frozenset("n N no No NO false False FALSE off Off OFF".split())

# replica URL query flags (?forcePathStyle=) go through Go's strconv.ParseBool;
GO_TRUE_WORDS = frozenset("1 t T TRUE true True".split())

GO_FALSE_WORDS = frozenset("0 f F FALSE false False".split())

# restorable's own RESTORABLE_* variables are compared after strip() and lower().
ENV_TRUE_WORDS = frozenset({"1", "true", "yes", "on"})

ENV_FALSE_WORDS = frozenset({"0", "false", "no", "off"})


def env_bool(value: str, name: str) -> bool:
    """A ``RESTORABLE_*`` boolean (``ENV_TRUE_WORDS`` / ``ENV_FALSE_WORDS``, any case).

    :raises ConfigError: naming the variable and the accepted words.
    """
    word = value.strip().lower()
    if word not in ENV_TRUE_WORDS | ENV_FALSE_WORDS:
        raise ConfigError(f"{name}={value!r} is not a boolean; set it to true or false (or 1/0, yes/no, on/off)")
    return word in ENV_TRUE_WORDS


def positive_int(environ: Mapping[str, str], name: str, default: int) -> int:
    """Environment variable ``name`` as a whole number >= 1; ``default`` when unset or blank.

    :raises ConfigError: any other value, naming the variable and an example.
    """
    raw = (environ.get(name) or "").strip()
    if not raw:
        return default
    if not (raw.isascii() and raw.isdigit()):
        raise ConfigError(f"{name}={raw!r} is not a whole number; use e.g. {default}")
    if int(raw) < 1:
        raise ConfigError(f"{name}={raw!r} must be at least 1; use e.g. {default}")
    return int(raw)


def printable(text: str) -> str:
    """``text`` itself if it fits on one line, else its repr (messages are one line)."""
    return text if text.isprintable() else repr(text)


def load_yaml(text: str, source: str, loader: type, purpose: str) -> Any:
    """Load YAML ``text`` with ``loader``; every failure is a one-line ConfigError.

    PyYAML's own message quotes the offending line, which may hold an expanded secret,
    so only its ``problem`` and position are used.

    :param source: the file named in messages.
    :param purpose: what the file holds, for the nesting message ("a Litestream config").
    """
    import yaml  # deferred: its callers' loaders import it anyway, and `--help` (which imports this module) never does

    try:
        return yaml.load(text, Loader=loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1} column {mark.column + 1}" if mark else "unknown position"
        problem = exc.problem or exc.context or "invalid syntax"
        raise ConfigError(f"{source}: {where}: invalid YAML ({problem}); fix the syntax there") from None
    except yaml.YAMLError:
        raise ConfigError(f"{source}: invalid YAML; check the file is a YAML mapping") from None
    except (ValueError, TypeError, IndexError, OverflowError):  # a constructor choking on a value
        raise ConfigError(f"{source}: invalid YAML value (a tagged scalar?); check tags such as !!int") from None
    except RecursionError:  # PyYAML recurses once per nesting level
        raise ConfigError(f"{source}: YAML nested too deeply; {purpose} needs a few levels") from None
