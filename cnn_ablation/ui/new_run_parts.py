"""Parts of the New run page (new_run.py) that are functions, not the page's flow: whether a
built-in dataset is here, the "Your own network" upload, and each number of the form checked on
its own (so every bad one is named at once)."""

from __future__ import annotations

from typing import Any

import streamlit as st

from cnn_ablation.config import ConfigError, RunConfig, new_run_problems
from cnn_ablation.data import datasets
from cnn_ablation.data.arrays import Availability, DatasetUnavailable
from cnn_ablation.networks import registry as networks
from cnn_ablation.ui.common import plain

FIELD_NAMES = {"epochs": "Epochs", "batch_size": "Batch size", "learning_rate": "Learning rate",
               "seeds": "Seeds", "val_split": "More settings", "limit_train": "More settings",
               "name": "Name", "dataset": "Dataset", "dropout": "Dropout rate"}


@st.cache_data(ttl=30, show_spinner=False)
def availability(name: str) -> Availability:
    """Whether a built-in dataset's files are here (cached for 30 s). Any problem comes back as
    "missing" with the reason, never as an exception."""
    try:
        return datasets.availability(name)
    except (DatasetUnavailable, ConfigError) as exc:
        return Availability("missing", str(exc))


def dataset_label(name: str) -> str:
    state = availability(name)
    return f"{name} — {state.state}"


def network_upload() -> None:
    """The "Your own network" expander's content. A file is added as soon as it is uploaded
    (no second click), once per upload; a refusal stays beside the uploader while that file is
    in it. A network just added is selected on the next run (session_state uploaded_network)."""
    st.caption(f"A Keras 3 `.keras` file (up to {networks.MAX_UPLOAD_BYTES // 2**20} MB), loaded "
               "in safe mode: no code runs from the file. Its BatchNorm and Dropout layers become "
               "switches. Python builders come from the folders in ABLATION_NETWORK_PATHS.")
    # Any file is taken and checked here: Streamlit's own type filter marks another file with a
    # red icon and no words; this says what is wrong with it.
    upload = st.file_uploader("Upload a .keras file", key="network_upload")
    if upload is None:
        st.session_state.pop("network_upload_seen", None)
    elif st.session_state.get("network_upload_seen", (None,))[0] != upload.file_id:
        refusal = None
        try:
            added = networks.add_file(upload.name, upload.getvalue())
            with st.spinner("Reading the network with Keras: a helper process, about 20 s the "
                            "first time…"):
                networks.check_added(added)
        except ConfigError as exc:
            refusal = str(exc)
        st.session_state["network_upload_seen"] = (upload.file_id, refusal)
        if refusal is None:
            st.session_state["uploaded_network"] = added.key
            st.rerun()
    if upload is not None and (refusal := st.session_state["network_upload_seen"][1]):
        st.error(plain(refusal))


def number_problems(numbers: list[tuple[str, Any]], slots: dict[str, Any]) -> list[str]:
    """Each (field, value) checked alone, as a new run's RunConfig and its new-run bounds would:
    a refusal is shown in `slots[field]` and named in the list returned, every one of them."""
    bad = []
    for field, value in numbers:
        try:
            one: dict[str, Any] = {field: value}
            beyond = new_run_problems(RunConfig(**one))
            if beyond:
                raise beyond[0]
        except ConfigError as exc:
            slots[field].error(plain(exc))
            bad.append(f"{FIELD_NAMES.get(field, field)} {exc.given!r} is not allowed")
        except (TypeError, ValueError) as exc:
            slots[field].error(plain(f"{field}: {exc}"))
            bad.append(f"{FIELD_NAMES.get(field, field)} cannot be used")
    return bad
