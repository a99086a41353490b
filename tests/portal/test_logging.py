"""Production logs: one line per event (CloudWatch and most shippers split on newlines)."""

from __future__ import annotations

import io
import logging
import logging.config

from django.conf import settings

from portal.celery import app as celery_app


def _configured_output(emit) -> str:
    """What the portal's console handler writes for the records `emit` logs."""
    config = {**settings.LOGGING, "root": {"handlers": ["console"], "level": "INFO"}}
    stream = io.StringIO()
    handler_config = {**settings.LOGGING["handlers"]["console"], "stream": stream}
    config["handlers"] = {"console": handler_config}
    config["loggers"] = {}
    logger = logging.getLogger("tests.portal.logging")
    before = logging.getLogger().handlers[:]
    logging.config.dictConfig(config)
    try:
        emit(logger)
    finally:
        logging.config.dictConfig(settings.LOGGING)
        root = logging.getLogger()
        root.handlers = before
    return stream.getvalue()


def test_a_traceback_is_one_line() -> None:
    def emit(logger: logging.Logger) -> None:
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("task failed")

    output = _configured_output(emit)

    assert output.count("\n") == 1, output
    assert "task failed" in output and "ValueError: boom" in output


def test_a_message_cannot_start_a_second_line() -> None:
    output = _configured_output(lambda logger: logger.warning("name %s", "x\nFORGED ERROR line"))

    assert output.count("\n") == 1, output


def test_celery_processes_keep_the_portals_logging() -> None:
    # Celery replaces the root logger's handlers (its own multi-line format) unless a receiver of
    # setup_logging configures logging itself.
    from celery import signals

    assert signals.setup_logging.receivers
    root = logging.getLogger()
    before = root.handlers[:]
    was_setup = type(celery_app.log)._setup
    try:
        celery_app.log.already_setup = False
        celery_app.log.setup_logging_subsystem(loglevel="INFO")
        formatters = {type(handler.formatter).__name__ for handler in root.handlers}
        assert "OneLineFormatter" in formatters
    finally:
        root.handlers = before
        celery_app.log.__dict__.pop("_setup", None)
        type(celery_app.log)._setup = was_setup
