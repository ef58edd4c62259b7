"""The HTTP API's request and response bodies (they are its OpenAPI document)."""
import uuid
from datetime import datetime
from typing import Any, Dict, List, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from gigsterpg.lib.mongo.projection import PROJECTIONS
from gigsterpg.lib.pg.db.gig import GIG_STATES
from gigsterpg.lib.pg.db.states import AUTO, JOB_KINDS, JOB_STATES, SYNC_MODES
from gigsterpg.lib.pg.sync.registry import COLLECTIONS, CollectionName

NO_NUL = r"^[^\x00]*$"  # PostgreSQL and libpq take no NUL character in a name or a value
JobState = Literal[JOB_STATES]
GigState = Literal[GIG_STATES]


class Problem(BaseModel):
    """Why a request was refused: a code for programs, and what / why / what to do for people."""

    error: str = Field(description="machine-readable cause, e.g. table_not_found, source_auth_failed")
    message: str
    why: str = ""
    todo: str = ""


class SourceDetails(BaseModel):
    """Where to read (a PostgreSQL database), and which collection of gigsterpg's MongoDB database to write."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    host: str = Field(min_length=1, max_length=255, pattern=r"^[!-~]+$", examples=["db.example.com"],
                      description="name or address (ASCII: punycode for international names), or a socket directory")
    port: int = Field(5432, ge=1, le=65535)
    user: str = Field(min_length=1, max_length=63, pattern=NO_NUL)
    password: SecretStr = Field(SecretStr(""), description="never stored, logged or sent back")
    database: str = Field(min_length=1, max_length=63, pattern=NO_NUL)
    sslmode: Optional[Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]] = None
    collection: Optional[str] = Field(None, min_length=1, max_length=120, pattern=r"^[^$\x00]+$",
                                      description="target collection (default: the table's or projection's"
                                                  " name); no '$',"
                                                  " not system.*")
    batch_size: int = Field(2000, ge=1, le=100_000, description="rows per read and per bulk write")

    @field_validator("collection")
    @classmethod
    def not_a_system_collection(cls, name: Optional[str]) -> Optional[str]:
        if name is not None and name.startswith("system."):
            raise ValueError("names that start with 'system.' are MongoDB's own")
        return name


class ExportRequest(SourceDetails):
    """A table to export, one document per row."""

    table: str = Field(min_length=1, max_length=127, pattern=NO_NUL,
                       description="[schema.]name, exactly as in the catalog (case-sensitive)")
    table_schema: Optional[str] = Field(None, alias="schema", min_length=1, max_length=63, pattern=NO_NUL,
                                        description="the schema, when the table's name holds a dot")


class ProjectionRequest(SourceDetails):
    """A projection to run (export-orders): one document per row of its query, unchanged ones not written again."""

    projection: Literal[PROJECTIONS] = Field(description="a shipped projection (orders: one document per order"
                                                         " with its items and totals; docs/pipelines/export-orders.md)")
    tax_rate: Optional[str] = Field(None, pattern=r"^(0(\.[0-9]{1,6})?|1(\.0{1,6})?)$", examples=["0.15"],
                                    description="taxes = subtotal x rate, half-up to cents (default:"
                                                " GIGSTERPG_TAX_RATE, else 0.15)")
    time_zone: Optional[str] = Field(None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_+\-/]+$",
                                     examples=["America/Mexico_City"],
                                     description="the zone of an order's calendar date, an IANA name (default:"
                                                 " GIGSTERPG_TIME_ZONE, else UTC)")


class RestartExport(BaseModel):
    """The password of an export's source, which the job record does not keep."""

    model_config = ConfigDict(extra="forbid")

    password: SecretStr = Field(SecretStr(""), description="never stored, logged or sent back")


class SyncRequest(BaseModel):
    """A MongoDB -> PostgreSQL sync of gigsterpg's configured databases."""

    model_config = ConfigDict(extra="forbid")

    collections: Optional[List[CollectionName]] = Field(None, min_length=1, max_length=len(COLLECTIONS))
    mode: Literal[SYNC_MODES] = AUTO


class JobStarted(BaseModel):
    id: uuid.UUID
    state: JobState
    status_url: str


class Job(BaseModel):
    """A job and how far it got."""

    id: uuid.UUID
    kind: Literal[JOB_KINDS]
    state: JobState
    params: Dict[str, Any] = Field(description="what was asked, without the password")
    created_at: datetime
    started_at: Optional[datetime] = None
    finished_at: Optional[datetime] = None
    rows_done: int
    rows_total: Optional[int] = None
    rate: Optional[float] = Field(None, description="rows (documents) per second since the job started")
    errors: List[str]
    result: Optional[Dict[str, Any]] = None
    restart_of: Optional[uuid.UUID] = None
    status_url: str


class JobList(BaseModel):
    items: List[Job]


class Replicated(BaseModel):
    """What every replicated row has: PostgreSQL's key, the MongoDB _id, the document's timestamps."""

    model_config = ConfigDict(populate_by_name=True)

    id: int = Field(description="PostgreSQL's key: the order of the pages")
    mongo_id: str = Field(alias="_id", description="the MongoDB _id as text")
    name: str
    created: Optional[datetime] = None
    updated: Optional[datetime] = None


class User(Replicated):
    email: Optional[str] = None


class Gig(Replicated):
    description: Optional[str] = None
    state: GigState
    budget: Optional[str] = Field(None, description="exact decimal, as text")
    poster: Optional[str] = Field(None, description="the poster's _id, when the poster is replicated")
    poster_ref: Optional[str] = Field(None, description="the poster reference as the document had it")


class UserDetail(User):
    skills: List[str]
    gigs: List[Gig] = Field(description="the user's first gigs (by id); gigs_url pages through all")
    gigs_total: int
    gigs_url: str


class UserPage(BaseModel):
    items: List[User]
    next: Optional[str] = Field(None, description="URL of the next page; null on the last")


class GigPage(BaseModel):
    items: List[Gig]
    next: Optional[str] = Field(None, description="URL of the next page; null on the last")


class Check(BaseModel):
    reachable: bool
    error: Optional[str] = None


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    postgres: Check
    mongo: Check
