"""Growing a stored study's value space: a value added to a categorical axis, or more seeds per grid cell.

Optuna stores a categorical parameter's choices with every trial and refuses a trial whose choices differ from the
study's first ("CategoricalDistribution does not support dynamic value space"). A grid study's cells are such
parameters (every categorical axis, and the seed), so adding a value to a spec's axis, or asking a study for more
seeds than it was created with, would make every later trial fail. Optuna has no call to change a stored
distribution, so growing rebuilds the study under the same name: the same trials (states, values, curves,
attributes, start and end times), their distributions widened. The stored choices keep their order and new values
come last; a value dropped from the spec stays a choice, so the trials that used it stay valid.

The rebuild is made safe against a kill: the study is first copied to a backup study, and the backup is deleted
only once the rebuilt study is complete. A call that finds a backup restores it before anything else.
"""
from __future__ import annotations

from typing import Any, Sequence

BACKUP_SUFFIX = ".before-growth"


def stored_choices(trials) -> dict[str, tuple]:
    """The categorical choices the study's trials carry, by parameter name (the first trial's: all agree)."""
    from optuna.distributions import CategoricalDistribution

    choices: dict[str, tuple] = {}
    for t in trials:
        for name, dist in t.distributions.items():
            if isinstance(dist, CategoricalDistribution):
                choices.setdefault(name, tuple(dist.choices))
    return choices


def widened_choices(stored: dict[str, Sequence[Any]], wanted: dict[str, Sequence[Any]]) -> dict[str, tuple]:
    """Every wanted parameter's choices: the stored ones in their order, then the wanted values they lack.
    A parameter the study has not stored yet takes the wanted values as they are."""
    out = {}
    for name, values in wanted.items():
        held = tuple(stored.get(name, ()))
        out[name] = held + tuple(v for v in values if v not in held) if held else tuple(values)
    return out


def grown_params(stored: dict[str, Sequence[Any]], widened: dict[str, Sequence[Any]]) -> dict[str, tuple]:
    """The parameters whose stored choices must grow to ``widened`` (new values to the stored ones)."""
    return {name: tuple(c[len(stored[name]):]) for name, c in widened.items()
            if name in stored and tuple(stored[name]) != tuple(c)}


def restore_interrupted_growth(storage, name: str) -> bool:
    """If a growth of study ``name`` was killed part-way (its backup still exists), put the backup back."""
    import optuna

    if not _exists(storage, name + BACKUP_SUFFIX):
        return False
    if _exists(storage, name):
        optuna.delete_study(study_name=name, storage=storage)
    optuna.copy_study(from_study_name=name + BACKUP_SUFFIX, from_storage=storage, to_storage=storage,
                      to_study_name=name)
    optuna.delete_study(study_name=name + BACKUP_SUFFIX, storage=storage)
    return True


def grow_study(study, widened: dict[str, Sequence[Any]], sampler=None, pruner=None):
    """Rebuild ``study`` with every categorical parameter in ``widened`` given those choices; returns the new
    study object (same name, same storage). Refuses while a trial is running: its worker would tell a trial that
    no longer exists."""
    import optuna
    from optuna.distributions import CategoricalDistribution
    from optuna.trial import FrozenTrial, TrialState

    trials = study.get_trials(deepcopy=False)
    if any(t.state == TrialState.RUNNING for t in trials):
        raise RuntimeError(f"study {study.study_name} has running trials; its value space can grow once no worker "
                           f"runs (stop them, or wait for their heartbeat to go stale, then run again)")
    storage, name = study._storage, study.study_name
    backup = name + BACKUP_SUFFIX
    optuna.copy_study(from_study_name=name, from_storage=storage, to_storage=storage, to_study_name=backup)
    system_attrs = storage.get_study_system_attrs(storage.get_study_id_from_name(name))
    user_attrs, directions = dict(study.user_attrs), study.directions
    optuna.delete_study(study_name=name, storage=storage)
    grown = optuna.create_study(study_name=name, storage=storage, directions=directions, sampler=sampler,
                                pruner=pruner)
    for key, value in user_attrs.items():
        grown.set_user_attr(key, value)
    grown_id = storage.get_study_id_from_name(name)
    for key, value in system_attrs.items():
        storage.set_study_system_attr(grown_id, key, value)
    rebuilt = []
    for t in sorted(trials, key=lambda t: t.number):
        distributions = {p: CategoricalDistribution(list(widened[p])) if p in widened else d
                         for p, d in t.distributions.items()}
        rebuilt.append(FrozenTrial(
            number=t.number, state=t.state, value=None, values=t.values, datetime_start=t.datetime_start,
            datetime_complete=t.datetime_complete, params=t.params, distributions=distributions,
            user_attrs=t.user_attrs, system_attrs=t.system_attrs, intermediate_values=t.intermediate_values,
            trial_id=t._trial_id))
    grown.add_trials(rebuilt)
    optuna.delete_study(study_name=backup, storage=storage)
    return grown


def _exists(storage, name: str) -> bool:
    try:
        storage.get_study_id_from_name(name)
        return True
    except KeyError:
        return False
