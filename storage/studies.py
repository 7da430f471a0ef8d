"""Studies as stored: a name and a StudySpec as JSON. Their runs are found by config hash."""

from __future__ import annotations

import time

from sqlalchemy import Engine, select

from storage.engine import session_scope
from storage.models import StudyRow
from storage.records import Study, StudyNotFound


def create_study(engine: Engine, name: str, spec_json: str) -> int:
    with session_scope(engine) as session:
        row = StudyRow(name=name, spec_json=spec_json, created_at=time.time())
        session.add(row)
        session.flush()
        return row.id


def list_studies(engine: Engine) -> list[Study]:
    with session_scope(engine, write=False) as session:
        return [Study(r.id, r.name, r.spec_json, r.created_at)
                for r in session.scalars(select(StudyRow).order_by(StudyRow.id))]


def find_study_or_raise(engine: Engine, study_id: int) -> Study:
    with session_scope(engine, write=False) as session:
        r = session.get(StudyRow, study_id)
        if r is None:
            raise StudyNotFound(study_id)
        return Study(r.id, r.name, r.spec_json, r.created_at)
