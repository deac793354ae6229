"""engine/errors.py: one documented hierarchy, each error's code (and HTTP status) on its class."""

from __future__ import annotations

import inspect
import re

import pytest

from engine import errors

CLASSES = [c for _, c in inspect.getmembers(errors, inspect.isclass)
           if c.__module__ == errors.__name__ and issubclass(c, errors.KlaviyoSyncError)]
REQUEST_ERRORS = [c for c in CLASSES if issubclass(c, errors.ServiceError) and re.fullmatch(r"V[45]\d\d", c.code)]


def test_every_error_class_is_exported_and_drawn_in_the_tree() -> None:
    """Each KlaviyoSyncError class of engine.errors is in __all__ and named in the module docstring."""
    doc = errors.__doc__ or ""
    assert [] == [c.__name__ for c in CLASSES if c.__name__ not in errors.__all__ or c.__name__ not in doc]


@pytest.mark.parametrize("cls", REQUEST_ERRORS, ids=[c.__name__ for c in REQUEST_ERRORS])
def test_a_request_error_answers_with_the_status_of_its_code(cls: type[errors.ServiceError]) -> None:
    """A V4xx/V5xx ServiceError class carries HTTP status xxx, so a raise site names neither."""
    err = cls("message")
    assert (int(cls.code[1:]), cls.code) == (err.status, err.code)


def test_a_service_error_of_a_status_given_keeps_it() -> None:
    """A ServiceError made from another HTTP status keeps the code and status it is given; else 400."""
    err = errors.ServiceError("Conflict", code="V409", status=409)
    assert ("V409", 409, 400) == (err.code, err.status, errors.ServiceError("x").status)
