"""Errors become a red box in the page, never a traceback: the user's mistakes (bad data, a bad checkpoint, a
refused job) show their own message; anything else shows a short message and is logged to the terminal."""

from __future__ import annotations

import logging
from contextlib import contextmanager

import streamlit as st

from fercore.jobs import JobError

log = logging.getLogger("fercore.app")
# The exceptions whose message is written for the user (fercore's and the OS's); DataError and CheckpointError are
# ValueErrors.
USER_ERRORS = (ValueError, OSError, JobError)


@contextmanager
def shown_errors(doing: str = ""):
    """Run a block; on an error show it with st.error and carry on with the rest of the page.

    st.stop / st.rerun / st.switch_page raise BaseExceptions, which pass through untouched.
    """
    try:
        yield
    except Exception as error:  # noqa: BLE001 -- the page must stay usable whatever fails
        show_error(error, doing)


def show_error(error: Exception, doing: str = "") -> None:
    prefix = f"Could not {doing}: " if doing else ""
    if isinstance(error, USER_ERRORS):
        st.error(f"{prefix}{error}", icon=":material/error:")
        return
    log.exception("unexpected error%s", f" while trying to {doing}" if doing else "")
    st.error(f"{prefix}unexpected {type(error).__name__}: {error}. The details are in the terminal that runs "
             "the app.", icon=":material/error:")
