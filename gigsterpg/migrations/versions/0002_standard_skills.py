"""Load the standard skill list into skills

Revision ID: 5c1f0e2a7b31
Revises: 898a36cca511
Create Date: 2026-11-22 23:00:00
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "5c1f0e2a7b31"
down_revision: Union[str, None] = "898a36cca511"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

# Frozen here on purpose: a migration must give the same result whenever it runs.
STANDARD_SKILLS = (
    "Android", "Angular", "AWS", "Blockchain", "C#", "C++", "Copywriting", "Data Science", "DevOps",
    "Django", "Docker", "Figma", "Flutter", "Go", "GraphQL", "iOS", "Java", "JavaScript", "Kotlin",
    "Kubernetes", "Machine Learning", "MongoDB", "Node.js", "PHP", "PostgreSQL", "Product Management",
    "Python", "QA", "React", "React Native", "Ruby on Rails", "Rust", "Scala", "SQL", "Swift",
    "TypeScript", "UI Design", "UX Research", "Vue.js", "WordPress",
)

skills = sa.table("skills", sa.column("name", sa.Text))


def upgrade() -> None:
    """Insert the standard skills that are not there yet."""
    bind = op.get_bind()
    present = {name.lower() for (name,) in bind.execute(sa.text("SELECT name FROM skills"))}
    missing = [{"name": name} for name in STANDARD_SKILLS if name.lower() not in present]
    if missing:
        op.bulk_insert(skills, missing)


def downgrade() -> None:
    """Remove the standard skills (user_skills rows pointing at them go first)."""
    names = [name.lower() for name in STANDARD_SKILLS]
    bind = op.get_bind()
    bind.execute(sa.text("DELETE FROM user_skills WHERE skill_id IN "
                         "(SELECT id FROM skills WHERE lower(name) = ANY(:names))"), {"names": names})
    bind.execute(sa.text("DELETE FROM skills WHERE lower(name) = ANY(:names)"), {"names": names})
