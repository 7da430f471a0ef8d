"""Who may see the dashboard: nobody beyond this machine without a password.

`require_access()` runs in app.py before navigation, so no page (and no database access, no
worker start) happens for a visitor who is not let in:

- listening beyond loopback (Streamlit's `server.address` is not 127.0.0.1 / localhost / ::1; an
  unset address means every interface) without `ABLATION_PASSWORD`: every page refuses, saying
  which variable to set;
- with `ABLATION_PASSWORD` set (whatever the address): every page asks for it first, once per
  browser session.

A shared password rather than `st.login`: `st.login` (OpenID Connect) needs an identity provider
(Google, Microsoft, Auth0, ...) registered with a client id, secret and redirect URL in
secrets.toml, which someone running this on a lab GPU box may not have; one environment variable
works everywhere. Put it behind HTTPS (a reverse proxy) when it crosses a network you do not trust.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import threading
import time

import streamlit as st

from cnn_ablation.settings import SettingsError, settings
from cnn_ablation.ui.common import plain

LOOPBACK_NAMES = {"localhost", "ip6-localhost", "ip6-loopback"}
GRANTED = "access_granted"  # session_state: a digest of the password this session gave
WRONG_PASSWORD_DELAY_S = 1.0  # a wrong guess costs a second (of that session's script thread)
# Guessing with many sessions at once: failures are counted per client address and overall, in
# this server process, over a sliding window; past a limit every try is refused (even a right
# one) until the window has moved on.
ATTEMPT_WINDOW_S = 300.0
MAX_FAILURES_PER_CLIENT = 5
MAX_FAILURES_OVERALL = 50
_failures: list[tuple[float, str]] = []  # (when, client address) of each wrong password
_failures_lock = threading.Lock()
# Sessions that have been let in (their Streamlit session ids, newest last): server.py lets a
# file upload through only for one of these, so a visitor at the password prompt cannot make the
# server hold uploads. Bounded: the oldest are forgotten (they re-enter on their next rerun).
_entered: dict[str, None] = {}
MAX_ENTERED = 10_000


def _client() -> str:
    try:
        address = st.context.ip_address
    except Exception:  # no context (bare mode)
        return "unknown"
    return address if isinstance(address, str) and address else "unknown"


def locked_out(client: str, now: float | None = None) -> float:
    """Seconds until `client` may try again (0: now), after too many wrong passwords from it or
    from everyone together within ATTEMPT_WINDOW_S."""
    now = time.monotonic() if now is None else now
    with _failures_lock:
        _failures[:] = [(t, c) for t, c in _failures if now - t < ATTEMPT_WINDOW_S]
        mine = [t for t, c in _failures if c == client]
        waits = []
        if len(mine) >= MAX_FAILURES_PER_CLIENT:
            waits.append(mine[-MAX_FAILURES_PER_CLIENT] + ATTEMPT_WINDOW_S - now)
        if len(_failures) >= MAX_FAILURES_OVERALL:
            waits.append(_failures[-MAX_FAILURES_OVERALL][0] + ATTEMPT_WINDOW_S - now)
    return max(waits, default=0.0)


def _failed(client: str) -> None:
    with _failures_lock:
        _failures.append((time.monotonic(), client))


def beyond_loopback(address: str | None) -> bool:
    """Whether a server bound to `address` can be reached from other machines. Unset or empty
    means every interface; a host name other than localhost may resolve to anything."""
    if address is None or not str(address).strip():
        return True
    text = str(address).strip().strip("[]").lower()
    if text in LOOPBACK_NAMES:
        return False
    try:
        return not ipaddress.ip_address(text).is_loopback
    except ValueError:
        return True


def _digest(password: str) -> str:
    return hashlib.sha256(password.encode()).hexdigest()


def _address_shown(address: str | None) -> str:
    return f"address {address}" if address and str(address).strip() else "every network interface"


def may_enter() -> bool:
    """Whether this session may see the pages now; shows nothing."""
    try:
        s = settings()
    except SettingsError:
        return False
    if s.password is None:
        allowed = not beyond_loopback(st.get_option("server.address"))
    else:
        allowed = hmac.compare_digest(str(st.session_state.get(GRANTED, "")), _digest(s.password))
    if allowed:
        _remember_entered()
    return allowed


def _session_id() -> str | None:
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    return ctx.session_id if ctx is not None else None


def _remember_entered() -> None:
    session = _session_id()
    if session is None:
        return
    with _failures_lock:
        _entered.pop(session, None)
        _entered[session] = None
        while len(_entered) > MAX_ENTERED:
            del _entered[next(iter(_entered))]


def has_entered(session_id: str) -> bool:
    """Whether the browser session `session_id` has been let in (so may upload files)."""
    with _failures_lock:
        return session_id in _entered


def require_access() -> None:
    """Return when this session may see the pages; otherwise show why not (or the password
    prompt) and stop the script."""
    if may_enter():
        return
    try:
        s = settings()
    except SettingsError as exc:  # fail closed, with the variable to fix
        st.error(f"**A setting cannot be used.**  \n{plain(exc)}")
        st.stop()
    address = st.get_option("server.address")
    if s.password is None:
        if beyond_loopback(address):
            st.error(
                f"**This dashboard listens on {plain(_address_shown(address))}, so anyone who "
                "can reach this machine could use it; it shows nothing without a password.**  \n"
                "Set the environment variable `ABLATION_PASSWORD` to a password and restart it, "
                "or let it listen on this machine only: `ABLATION_ADDRESS=127.0.0.1` (the default "
                "of `make run` and of the Docker image) or `--server.address 127.0.0.1`.")
            st.stop()
        return
    if hmac.compare_digest(str(st.session_state.get(GRANTED, "")), _digest(s.password)):
        return
    _password_prompt(s.password)
    st.stop()


def _password_prompt(password: str) -> None:
    st.title("cnn-ablation")
    st.caption("This dashboard asks for the password it was started with (`ABLATION_PASSWORD`).")
    with st.form("access_form", border=False, width=420):
        given = st.text_input("Password", type="password", key="access_password")
        submitted = st.form_submit_button("Unlock", type="primary", key="access_unlock")
    if not submitted:
        return
    client = _client()
    wait = locked_out(client)
    if wait > 0:
        st.error(f"Too many wrong passwords: try again in {wait:.0f} s. (At most "
                 f"{MAX_FAILURES_PER_CLIENT} tries per address and {MAX_FAILURES_OVERALL} in all "
                 f"per {ATTEMPT_WINDOW_S / 60:.0f} minutes.)")
        return
    if hmac.compare_digest(given.encode(), password.encode()):
        st.session_state[GRANTED] = _digest(password)
        st.rerun()
    _failed(client)
    time.sleep(WRONG_PASSWORD_DELAY_S)
    st.error("Wrong password. Ask whoever started the dashboard for the `ABLATION_PASSWORD` it "
             "was given.")
