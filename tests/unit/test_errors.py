"""One error tree: every error netdist raises on purpose is a NetDistError in netdist.errors, with its code."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re

import grpc
import pytest

import netdist
from netdist import errors

OUTSIDE_THE_TREE = {
    "netdist.handler.SettingsError",  # handler API: a ValueError raised in the host process, which imports no grpc
    "netdist.server.store.writer._BatchError",  # carries a batch's failure inside the writer; never leaves it
    "netdist.jsonline.MalformedLineError",  # a bad line on an internal channel; the child that decodes it imports no grpc
    "netdist.adminctl.stopping.TerminatedError",  # SIGTERM as a BaseException (like KeyboardInterrupt): control flow, not an error
}


def _modules() -> list[str]:
    return [
        m.name
        for m in pkgutil.walk_packages(netdist.__path__, "netdist.")
        if not m.name.endswith("__main__") and ".api." not in m.name and ".migrations" not in m.name
    ]


def test_every_exception_class_of_netdist_is_in_errors_under_netdisterror() -> None:
    strays = []
    for name in _modules():
        module = importlib.import_module(name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ != name or not issubclass(cls, BaseException):
                continue
            where = f"{name}.{cls.__qualname__}"
            if where not in OUTSIDE_THE_TREE and (name != "netdist.errors" or not issubclass(cls, errors.NetDistError)):
                strays.append(where)
    assert strays == []


def _tree() -> list[type[errors.NetDistError]]:
    return [
        cls
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, errors.NetDistError) and cls is not errors.NetDistError
    ]


@pytest.mark.parametrize("cls", _tree(), ids=lambda cls: cls.__name__)
def test_each_class_has_its_status_code_as_the_tree_in_the_docstring_draws_it(cls: type[errors.NetDistError]) -> None:
    assert isinstance(cls.code, grpc.StatusCode) and cls.code is not grpc.StatusCode.OK
    drawn = re.search(rf"[─ ]{cls.__name__} +([A-Z_]+) ", errors.__doc__ or "")
    assert drawn is not None, f"{cls.__name__} is missing from the tree in errors.py's docstring"
    assert drawn[1] == cls.code.name


def test_the_client_rebuilds_the_classes_the_server_names_and_only_those() -> None:
    assert errors.named("StoreUnavailableError") is errors.StoreUnavailableError
    assert errors.named("ArtifactError") is errors.ArtifactError
    assert errors.named("HandlerCodeError") is None  # made from type, message and traceback, not from a message
    assert errors.named("grpc") is None
    assert errors.named("NoSuchError") is None
