#!/usr/bin/env python3
"""DHIS2 stand-in for the test cluster's localhost/dhis2-test/dhis2:<version> images.

DHIS2 itself cannot be obtained here, so this plays DHIS2 as far as the operator depends on it,
with the semantics of the tests' in-process fake (tests/support/migrating_dhis2.rs):

- Reads $DHIS2_HOME/dhis.conf as java.util.Properties. Unreadable, or without
  connection.url/username/password: an ERROR, and every path answers 404 for as long as the
  process lives (Tomcat with a webapp that failed to deploy); nothing is retried.
- filestore.provider=filesystem (the default): $DHIS2_HOME/files must be writable (a probe file
  is written and removed), else an ERROR and 404s as above.
- Connects to connection.url (jdbc:postgresql://HOST:PORT/DB). Unreachable: an ERROR, 503, and
  another try every 5 s (a real pod would be restarted by its liveness probe instead).
- Takes Flyway's advisory lock and reads the schema's release line: the highest successful
  `flyway_schema_history.version`, compared as version numbers. Then, as DHIS2 would:
  * empty database (no organisationunit table): a fresh install of its own version in ONE
    transaction: the postgis, pg_trgm and btree_gin extensions, a small DHIS2-shaped schema
    (userinfo with admin/district, organisationunit with Khmer names and geometries, datavalue,
    hibernate_sequence far advanced, ...), and the Flyway rows and marker tables of every release
    line from 2.41 up to its own;
  * same line: serves at once; older line: migrates in ONE transaction (Flyway group=true) per
    line 2.<L>.1 .. 2.<L>.5 and table upgrade_marker_2_<L>, spread over `standin.migration.seconds`
    (dhis.conf, default 3), answering 503 meanwhile; a process killed meanwhile commits nothing;
  * newer line, failed Flyway rows, or DHIS2 tables without Flyway history: refuses (503 forever);
  * version 2.43.0 fails on purpose at V2_43_3 after writing the migrations before it: a Flyway
    error is logged, everything is rolled back, 503 forever.
  A node that is up and finds the schema migrated past its line by another node stops serving
  (503), as the fake's "outrun" nodes.
- Once up: GET /api/system/ping -> pong (no authentication); every other /api path needs Basic
  authentication checked against userinfo (bcrypt, as DHIS2; a test may change a password by
  SQL) and answers 401 with `WWW-Authenticate: Basic realm="DHIS2"` otherwise:
  GET /api/system/info; POST /api/resourceTables/analytics (authority ALL or
  F_PERFORM_MAINTENANCE; logs "Analytics table generation requested by <user>", records the run
  in systemsetting keyLastSuccessfulAnalyticsTablesUpdate a second later);
  POST /api/fileResources (multipart `file` as DHIS2, or a raw body; ?domain=, default DOCUMENT
  here) stores the content under $DHIS2_HOME/files/<domain folder>/<uid> and answers 202 like
  DHIS2's web message; GET /api/fileResources/<uid>/data returns it.
  system.read_only_mode=on: the database session is read-only and writes answer 403.
- SIGTERM/SIGINT: running statements are cancelled, the connection closed, exit at once (143).

Not DHIS2 (on purpose or for want of it): a refused or failed start answers 503, as the fake
does (Tomcat would answer 404 once the webapp failed); no Redis, no S3 file store (uploads then
answer 500); file metadata lives beside the file, not in the fileresource table; the schema
installed is a small subset; any Flyway history newer on the same release line is accepted.

Logs go to stdout in DHIS2's layout: `* LEVEL yyyy-MM-ddTHH:mm:ss,SSS message (Source.java [thread])`.
Environment: DHIS2_VERSION (baked into each image from its tag), DHIS2_HOME (/opt/dhis2),
DHIS2_STANDIN_PORT (8080; for runs outside a container).
"""

import base64
import datetime
import email.parser
import email.policy
import hashlib
import json
import os
import re
import secrets
import signal
import socket
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import bcrypt
import psycopg2

VERSION = os.environ.get("DHIS2_VERSION", "")
HOME = os.environ.get("DHIS2_HOME", "/opt/dhis2")
PORT = int(os.environ.get("DHIS2_STANDIN_PORT", "8080"))
NODE_ID = socket.gethostname()
FIRST_LINE = 41            # a fresh install writes the release lines from 2.41 up to its own
MIGRATIONS_PER_LINE = 5    # 2.<L>.1 .. 2.<L>.5, as the fake
FAILING = {"2.43.0": (43, 3)}   # version -> the migration (line, step) that fails
EXTENSIONS = ("postgis", "pg_trgm", "btree_gin")   # DHIS2 aborts without them
RETRY_SECONDS = 5
SCHEMA_WATCH_SECONDS = 5


def java_hash(text):
    """java.lang.String.hashCode, signed 32 bits."""
    h = 0
    for c in text:
        h = (31 * h + ord(c)) & 0xFFFFFFFF
    return h - (1 << 32) if h >= 1 << 31 else h


# Flyway's PostgreSQL lock: "Flyway" in ASCII plus the hash of the quoted history table name.
FLYWAY_LOCK = 0x466C79776179 + java_hash('"public"."flyway_schema_history"')


def log(level, message, source="StandIn.java"):
    message = " ".join(str(message).split())   # one line per event, as tests read pod logs
    now = datetime.datetime.now().strftime("%Y-%m-%dT%H:%M:%S,%f")[:-3]
    thread = threading.current_thread().name
    print(f"* {level:<5} {now} {message} ({source} [{thread}])", flush=True)


# --- dhis.conf ----------------------------------------------------------------------------

def load_properties(text):
    """java.util.Properties.load: logical lines joined by an odd number of trailing `\\`, `#`/`!`
    comments, key ends at the first unescaped `=`, `:` or blank, `\\t \\n \\r \\f \\uXXXX`
    escapes, any other `\\x` is x. The text was read as ISO-8859-1, as Java does."""
    props = {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].lstrip(" \t\f")
        i += 1
        if not line or line[0] in "#!":
            continue
        while (len(line) - len(line.rstrip("\\"))) % 2 == 1 and i <= len(lines):
            line = line[:-1] + (lines[i].lstrip(" \t\f") if i < len(lines) else "")
            i += 1
        key, rest, j = [], "", 0
        while j < len(line):
            c = line[j]
            if c == "\\" and j + 1 < len(line):
                key.append(line[j:j + 2])
                j += 2
                continue
            if c in "=: \t\f":
                break
            key.append(c)
            j += 1
        rest = line[j:].lstrip(" \t\f")
        if rest[:1] in ("=", ":"):
            rest = rest[1:].lstrip(" \t\f")
        props[unescape("".join(key))] = unescape(rest)
    return props


def unescape(s):
    out, j = [], 0
    while j < len(s):
        c = s[j]
        if c != "\\" or j + 1 >= len(s):
            out.append(c)
            j += 1
            continue
        n = s[j + 1]
        if n == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", s[j + 2:j + 6]):
            out.append(chr(int(s[j + 2:j + 6], 16)))
            j += 6
            continue
        out.append({"t": "\t", "n": "\n", "r": "\r", "f": "\f"}.get(n, n))
        j += 2
    # \uD8xx\uDCxx pairs become one character, as Java's UTF-16 strings would print them.
    return "".join(out).encode("utf-16", "surrogatepass").decode("utf-16")


def on(value):
    return (value or "").strip().lower() in ("on", "true", "yes", "enable", "enabled")


class ConfigError(Exception):
    pass


def read_config():
    path = os.path.join(HOME, "dhis.conf")
    try:
        with open(path, encoding="iso-8859-1") as f:
            props = load_properties(f.read())
    except OSError as e:
        raise ConfigError(f"Configuration file could not be read: {path}: {e.strerror}")
    missing = [k for k in ("connection.url", "connection.username", "connection.password")
               if not props.get(k)]
    if missing:
        raise ConfigError(f"Required configuration missing in {path}: {', '.join(missing)}")
    m = re.fullmatch(r"jdbc:postgresql://([^/:?]+|\[[^\]]+\])(?::(\d+))?/([^?]+)(?:\?.*)?",
                     props["connection.url"])
    if not m:
        raise ConfigError(f"connection.url is not a PostgreSQL JDBC URL: {props['connection.url']}")
    props["_db"] = {"host": m.group(1).strip("[]"), "port": int(m.group(2) or 5432),
                    "dbname": m.group(3), "user": props["connection.username"],
                    "password": props["connection.password"]}
    return props


# --- state shared by the startup thread and HTTP handlers ---------------------------------

class State:
    phase = "starting"   # starting | migrating | up | refused (503) | undeployed (404)
    conf = {}
    analytics_running = False
    lock = threading.Lock()
    connections = set()  # open database connections, cancelled on SIGTERM


def set_phase(phase):
    with State.lock:
        State.phase = phase


def connect(conf, purpose):
    db = conf["_db"]
    conn = psycopg2.connect(connect_timeout=5, application_name=f"dhis2-standin {NODE_ID} {purpose}",
                            **db)
    if on(conf.get("system.read_only_mode")):
        conn.set_session(readonly=True)
    with State.lock:
        State.connections.add(conn)
    return conn


def close(conn):
    with State.lock:
        State.connections.discard(conn)
    try:
        conn.close()
    except psycopg2.Error:
        pass


def line_of(version):
    """The release line of `2.42.1` / `42.1.0` / `2.42.52`: 42; None if not a DHIS2 version."""
    parts = version.strip().lstrip("v").split(".")
    if not all(p.isdigit() for p in parts):
        return None
    nums = [int(p) for p in parts]
    if len(nums) >= 2 and nums[0] == 2:
        return nums[1]
    if 30 <= nums[0] < 100:
        return nums[0]
    return None


def version_key(version):
    nums = [int(p) for p in version.lstrip("v").split(".")]
    if nums[0] != 2:
        nums = [2] + nums
    while nums and nums[-1] == 0:
        nums.pop()
    return nums


def schema_facts(cur):
    """(highest successful DHIS2 version or None, failed versions, has organisationunit)."""
    cur.execute("SELECT to_regclass('public.flyway_schema_history') IS NOT NULL")
    has_history = cur.fetchone()[0]
    cur.execute("SELECT count(*) > 0 FROM information_schema.tables "
                "WHERE table_name = 'organisationunit'")
    has_orgunits = cur.fetchone()[0]
    if not has_history:
        return None, [], has_orgunits, False
    cur.execute("SELECT version, success, description FROM public.flyway_schema_history "
                "WHERE version IS NOT NULL ORDER BY installed_rank")
    rows = cur.fetchall()
    good = [v for v, ok, _ in rows if ok and line_of(v) is not None]
    failed = [f"{v} {d}" for v, ok, d in rows if not ok]
    highest = max(good, key=version_key) if good else None
    return highest, failed, has_orgunits, True


# --- Flyway: the migrations the stand-in writes (the fake's, statement for statement) ------

def migration_sql(line, step, rank):
    table = f"upgrade_marker_2_{line}"
    if step == 1:
        change = (f"CREATE TABLE public.{table} (step integer PRIMARY KEY, "
                  f"migrated_at timestamp NOT NULL DEFAULT now()); "
                  f"INSERT INTO public.{table} (step) VALUES (1);")
    else:
        change = f"INSERT INTO public.{table} (step) VALUES ({step});"
    checksum = line * 7919 + step * 104729
    return (f"{change} INSERT INTO public.flyway_schema_history (installed_rank, version, "
            f"description, type, script, checksum, installed_by, installed_on, execution_time, "
            f"success) VALUES ({rank}, '2.{line}.{step}', 'fake migration {step} of 2.{line}', "
            f"'SQL', '2.{line}/V2_{line}_{step}__fake_migration_{step}.sql', {checksum}, "
            f"current_user, now(), 7, true);")


FLYWAY_TABLE = """
CREATE TABLE public.flyway_schema_history (
    installed_rank integer NOT NULL PRIMARY KEY,
    version character varying(50),
    description character varying(200) NOT NULL,
    type character varying(20) NOT NULL,
    script character varying(1000) NOT NULL,
    checksum integer,
    installed_by character varying(100) NOT NULL,
    installed_on timestamp without time zone DEFAULT now() NOT NULL,
    execution_time integer NOT NULL,
    success boolean NOT NULL);
CREATE INDEX flyway_schema_history_s_idx ON public.flyway_schema_history (success);
"""

# What a backup engine meets in a small DHIS2 database; real DHIS2 names and columns (a subset).
BASE_SCHEMA = """
CREATE SEQUENCE public.hibernate_sequence;
SELECT setval('public.hibernate_sequence', 7000000);
CREATE TABLE public.userinfo (
    userinfoid bigint PRIMARY KEY, uid character varying(11) NOT NULL UNIQUE,
    code character varying(50), lastupdated timestamp NOT NULL, created timestamp NOT NULL,
    surname character varying(160) NOT NULL, firstname character varying(160) NOT NULL,
    email character varying(160), username character varying(255) UNIQUE,
    password character varying(60), passwordlastupdated timestamp, lastlogin timestamp,
    disabled boolean, uuid uuid,
    twofactortype character varying(50) DEFAULT 'NOT_ENABLED' NOT NULL,
    name character varying(321) GENERATED ALWAYS AS (firstname || ' ' || surname) STORED NOT NULL);
CREATE TABLE public.userrole (
    userroleid bigint PRIMARY KEY, uid character varying(11) NOT NULL UNIQUE,
    created timestamp NOT NULL, lastupdated timestamp NOT NULL, name character varying(230) NOT NULL);
CREATE TABLE public.userrolemembers (userroleid bigint NOT NULL REFERENCES public.userrole,
    userid bigint NOT NULL REFERENCES public.userinfo, PRIMARY KEY (userid, userroleid));
CREATE TABLE public.userroleauthorities (userroleid bigint NOT NULL REFERENCES public.userrole,
    authority character varying(255));
CREATE TABLE public.organisationunit (
    organisationunitid bigint PRIMARY KEY, uid character varying(11) NOT NULL UNIQUE,
    code character varying(50), created timestamp NOT NULL, lastupdated timestamp NOT NULL,
    name character varying(230) NOT NULL, shortname character varying(50) NOT NULL,
    parentid bigint REFERENCES public.organisationunit, path character varying(255),
    hierarchylevel integer, openingdate date NOT NULL, geometry geometry(Geometry, 4326));
CREATE TABLE public.datavalue (
    dataelementid bigint NOT NULL, periodid bigint NOT NULL,
    sourceid bigint NOT NULL REFERENCES public.organisationunit,
    categoryoptioncomboid bigint NOT NULL, attributeoptioncomboid bigint NOT NULL,
    value character varying(50000), storedby character varying(255),
    created timestamp NOT NULL, lastupdated timestamp NOT NULL, comment character varying(50000),
    followup boolean, deleted boolean NOT NULL,
    PRIMARY KEY (dataelementid, periodid, sourceid, categoryoptioncomboid, attributeoptioncomboid));
CREATE TABLE public.systemsetting (
    systemsettingid bigint PRIMARY KEY, name character varying(255) NOT NULL UNIQUE, value text);
CREATE UNLOGGED TABLE public.analytics_2025 (dx character(11), pe character varying(15),
    ou character(11), value double precision);

INSERT INTO public.userinfo (userinfoid, uid, code, lastupdated, created, surname, firstname,
    username, password, passwordlastupdated, disabled, uuid)
  VALUES (21, 'M5zQapPyTZI', 'admin', now(), now(), 'admin', 'admin', 'admin', %(admin_hash)s,
    now(), false, gen_random_uuid());
INSERT INTO public.userrole VALUES (22, 'yrB6vc5Ip3r', now(), now(), 'Superuser');
INSERT INTO public.userrolemembers VALUES (22, 21);
INSERT INTO public.userroleauthorities VALUES (22, 'ALL');
INSERT INTO public.organisationunit VALUES
  (101, 'KH000000001', 'KH', now(), now(), 'Cambodia', 'Cambodia', NULL, '/KH000000001', 1,
   '1953-11-09', ST_GeomFromText('POLYGON((102.3 10.4,107.6 10.4,107.6 14.7,102.3 14.7,102.3 10.4))', 4326)),
  (102, 'KH120000001', 'KH12', now(), now(), 'ភ្នំពេញ', 'ភ្នំពេញ', 101, '/KH000000001/KH120000001', 2,
   '1970-01-01', ST_GeomFromText('POLYGON((104.8 11.5,105.0 11.5,105.0 11.7,104.8 11.7,104.8 11.5))', 4326)),
  (103, 'KH120100001', 'KH1201', now(), now(), 'មណ្ឌលសុខភាព ទួលគោក', 'មណ្ឌលសុខភាព ទួលគោក', 102,
   '/KH000000001/KH120000001/KH120100001', 3, '1980-01-01', ST_SetSRID(ST_MakePoint(104.89, 11.58), 4326));
INSERT INTO public.datavalue SELECT 201, p, 103, 15, 15, (p * 7)::text, 'admin', now(), now(),
    CASE WHEN p = 301 THEN 'ពិនិត្យឡើងវិញ' END, false, false FROM generate_series(301, 306) p;
INSERT INTO public.systemsetting VALUES
  (nextval('public.hibernate_sequence'), 'applicationTitle', 'DHIS 2 stand-in'),
  (nextval('public.hibernate_sequence'), 'keySystemIdentifier', gen_random_uuid()::text);
INSERT INTO public.analytics_2025 VALUES ('DE000000201', '202501', 'KH120100001', 7);
"""


class MigrationFailed(Exception):
    pass


def ensure_extensions(cur):
    """Creates the extensions DHIS2 needs when missing (DHIS2 aborts without them)."""
    for ext in EXTENSIONS:
        cur.execute("SELECT 1 FROM pg_extension WHERE extname = %s", (ext,))
        if not cur.fetchone():
            log("INFO", f"Creating extension {ext}", "DatabaseInfoProvider.java")
            cur.execute(f"CREATE EXTENSION IF NOT EXISTS {ext}")


def run_migrations(cur, lines, seconds):
    """Flyway group=true: every pending migration in the caller's one transaction."""
    cur.execute("SELECT coalesce(max(installed_rank), 0) + 1 FROM public.flyway_schema_history")
    rank = cur.fetchone()[0]
    steps = [(line, step) for line in lines for step in range(1, MIGRATIONS_PER_LINE + 1)]
    failing = FAILING.get(VERSION)
    pause = seconds / max(len(steps), 1)
    for i, (line, step) in enumerate(steps):
        desc = f"2.{line}.{step} - fake migration {step} of 2.{line}"
        if (line, step) == failing:
            statement = f"ALTER TABLE public.upgrade_marker_2_{line} ADD COLUMN step integer"
            try:
                cur.execute(statement)
            except psycopg2.Error as e:
                raise MigrationFailed((line, step, desc, e.pgcode, e.pgerror.strip(), statement))
        log("INFO", f'Migrating schema "public" to version "{desc}"', "DbMigrate.java")
        cur.execute(migration_sql(line, step, rank + i))
        time.sleep(pause)
    return steps[-1] if steps else None


def flyway(conf):
    """One start: returns the phase to enter (up or refused). Raises psycopg2.OperationalError
    when the database cannot be reached (the caller retries)."""
    seconds = float(conf.get("standin.migration.seconds") or 3)
    own = line_of(VERSION)
    conn = connect(conf, "flyway")
    try:
        conn.autocommit = True
        cur = conn.cursor()
        waited = False
        while True:   # Flyway polls its lock
            cur.execute("SELECT pg_try_advisory_lock(%s)", (FLYWAY_LOCK,))
            if cur.fetchone()[0]:
                break
            if not waited:
                log("INFO", "Waiting for the Flyway lock held by another DHIS2", "DbMigrate.java")
                waited = True
            time.sleep(0.5)
        conn.autocommit = False
        highest, failed, has_orgunits, has_history = schema_facts(cur)
        schema_line = line_of(highest) if highest else None
        if failed:
            log("ERROR", "Validate failed: Migrations have failed validation. Detected failed "
                f"migration(s): {'; '.join(failed)}", "DbValidate.java")
            return "refused"
        if schema_line is None and has_orgunits:
            log("ERROR", "The database holds DHIS2 tables but no Flyway history of a DHIS2 "
                "version: refusing to start", "FlywayConfig.java")
            return "refused"
        if schema_line is not None and schema_line > own:
            log("ERROR", f"DHIS2 {VERSION} cannot run on a database migrated to schema "
                f"{highest} (DHIS2 cannot be downgraded)", "DbValidate.java")
            return "refused"
        try:
            ensure_extensions(cur)
            if schema_line is None:
                log("INFO", f"Empty database: installing the DHIS2 {VERSION} schema",
                    "V2_30_0__Populate_dhis2_schema_if_empty_database.java")
                set_phase("migrating")
                if not has_history:
                    cur.execute(FLYWAY_TABLE)
                admin = bcrypt.hashpw(b"district", bcrypt.gensalt(10, prefix=b"2a")).decode()
                cur.execute(BASE_SCHEMA, {"admin_hash": admin})
                last = run_migrations(cur, range(FIRST_LINE, own + 1), 0)
            elif schema_line < own:
                log("INFO", f'Current version of schema "public": {highest}', "DbMigrate.java")
                set_phase("migrating")
                last = run_migrations(cur, range(schema_line + 1, own + 1), seconds)
            else:
                last = None
                log("INFO", f'Schema "public" is up to date. No migration necessary ({highest}).',
                    "DbMigrate.java")
            conn.commit()
        except MigrationFailed as failure:
            line, step, desc, code, message, statement = failure.args[0]
            conn.rollback()
            log("ERROR", f'Migration of schema "public" to version "{desc}" failed! Changes '
                "successfully rolled back.", "org.flywaydb.core.internal.command.DbMigrate")
            log("ERROR", "Context initialization failed: org.flywaydb.core.internal.command."
                f"DbMigrate$FlywayMigrateException: Migration V2_{line}_{step}__fake_migration_"
                f"{step}.sql failed (SQL State: {code}, Message: {message}, Location: 2.{line}/"
                f"V2_{line}_{step}__fake_migration_{step}.sql, Statement: {statement})",
                "ContextLoader.java")
            return "refused"
        except psycopg2.OperationalError:
            raise   # the connection went (terminated, server restarting): start again
        except psycopg2.Error as e:
            conn.rollback()
            log("ERROR", f"Context initialization failed: org.flywaydb.core.internal.exception."
                f"FlywaySqlException: {e.pgerror or e}".strip(), "ContextLoader.java")
            return "refused"
        if last:
            log("INFO", f'Successfully applied migrations to schema "public", now at version '
                f"v2.{last[0]}.{last[1]}", "DbMigrate.java")
        return "up"
    finally:
        close(conn)


def start():
    threading.current_thread().name = "main"
    log("INFO", f"DHIS2 {VERSION} stand-in starting; DHIS2_HOME is {HOME}", "DefaultLocationManager.java")
    if line_of(VERSION) is None:
        log("ERROR", f"DHIS2_VERSION '{VERSION}' is not a DHIS2 version", "StandIn.java")
        return set_phase("undeployed")
    try:
        conf = read_config()
    except ConfigError as e:
        log("ERROR", f"Context initialization failed: {e}", "ContextLoader.java")
        return set_phase("undeployed")
    State.conf = conf
    provider = conf.get("filestore.provider", "filesystem")
    if provider == "filesystem":
        files = os.path.join(HOME, "files")
        probe = os.path.join(files, f".standin-probe-{NODE_ID}")
        try:
            os.makedirs(files, exist_ok=True)
            with open(probe, "w") as f:
                f.write("probe")
            os.remove(probe)
        except OSError as e:
            log("ERROR", f"Context initialization failed: file store {files} is not writable: "
                f"{e.strerror}", "JCloudsFileResourceContentStore.java")
            return set_phase("undeployed")
    log("INFO", f"File store provider: {provider}", "JCloudsFileResourceContentStore.java")
    db = conf["_db"]
    while True:
        try:
            phase = flyway(conf)
            break
        except psycopg2.OperationalError as e:   # unreachable, refused login, no such database
            set_phase("starting")
            log("ERROR", f"HikariPool-1 - Connection to {db['host']}:{db['port']}/{db['dbname']} "
                f"failed: {str(e).strip()}; retrying in "
                f"{RETRY_SECONDS} s", "HikariPool.java")
            time.sleep(RETRY_SECONDS)
        except Exception as e:   # anything else stops the start, as in DHIS2
            log("ERROR", f"Context initialization failed: {type(e).__name__}: {str(e).strip()}",
                "ContextLoader.java")
            phase = "refused"
            break
    set_phase(phase)
    if phase == "up":
        log("INFO", f"DHIS2 {VERSION} is up (stand-in, node {NODE_ID})", "StartupListener.java")
        watch_schema(conf)


def watch_schema(conf):
    """Stop serving when another node migrated the schema past this version's line."""
    own = line_of(VERSION)
    while State.phase == "up":
        time.sleep(SCHEMA_WATCH_SECONDS)
        try:
            conn = connect(conf, "watch")
        except psycopg2.Error:
            continue   # a restore may have the database away for a moment
        try:
            highest = schema_facts(conn.cursor())[0]
        except psycopg2.Error:
            highest = None
        finally:
            close(conn)
        if highest and line_of(highest) > own:
            log("ERROR", f"The database was migrated to schema {highest} by a newer DHIS2: "
                f"{VERSION} cannot work on it", "StandIn.java")
            set_phase("refused")


# --- HTTP ---------------------------------------------------------------------------------

DOMAIN_FOLDERS = {"DATA_VALUE": "dataValue", "PUSH_ANALYSIS": "pushAnalysis",
                  "DOCUMENT": "document", "MESSAGE_ATTACHMENT": "messageAttachment",
                  "USER_AVATAR": "userAvatar", "ORG_UNIT": "organisationUnit", "ICON": "icon",
                  "JOB_DATA": "jobData"}
UID_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def new_uid():
    return secrets.choice(UID_CHARS[:52]) + "".join(secrets.choice(UID_CHARS) for _ in range(10))


def web_message(code, status, message, **extra):
    reason = {200: "OK", 202: "Accepted", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
              409: "Conflict", 500: "Internal Server Error"}[code]
    return {"httpStatus": reason, "httpStatusCode": code, "status": status, "message": message,
            **extra}


class Handler(BaseHTTPRequestHandler):
    server_version = "Apache-Coyote/1.1"   # what Tomcat says
    sys_version = ""
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):   # Tomcat writes no access log to stdout
        pass

    def send(self, code, body=b"", ctype="text/plain;charset=UTF-8", headers=()):
        if isinstance(body, (dict, list)):
            body, ctype = json.dumps(body).encode(), "application/json;charset=UTF-8"
        elif isinstance(body, str):
            body = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def do_GET(self):
        self.route("GET")

    def do_HEAD(self):
        self.route("GET")

    def do_POST(self):
        self.route("POST")

    def do_PUT(self):
        self.route("PUT")

    def do_DELETE(self):
        self.route("DELETE")

    def route(self, method):
        threading.current_thread().name = "http-nio-8080-exec"
        self.payload = self.body()   # read first: an unread body would corrupt the next request
        path, _, query = self.path.partition("?")
        # /api/41/system/info and /api/system/info.json are /api/system/info too.
        path = re.sub(r"^/api/\d+/", "/api/", path)
        path = re.sub(r"\.json$", "", path).rstrip("/") or "/"
        phase = State.phase
        if phase == "undeployed":
            return self.send(404, "<!doctype html><title>HTTP Status 404 – Not Found</title>",
                             "text/html;charset=utf-8")
        if phase != "up":
            return self.send(503, "<!doctype html><title>HTTP Status 503 – Service Unavailable</title>",
                             "text/html;charset=utf-8")
        if path == "/api/system/ping" and method == "GET":
            return self.send(200, "pong")
        if path == "/" and method == "GET":
            return self.send(302, "", headers=[("Location", "/dhis-web-login/")])
        if not path.startswith("/api/"):
            return self.send(404, web_message(404, "ERROR", f"{path} not found"))
        try:
            user = self.authenticate()
        except psycopg2.Error as e:
            log("ERROR", f"Authentication failed on a database error: {str(e).strip()}")
            return self.send(500, web_message(500, "ERROR", "Database unavailable"))
        if user is None:
            return self.send(401, web_message(401, "ERROR", "Unauthorized"),
                             headers=[("WWW-Authenticate", 'Basic realm="DHIS2"')])
        try:
            self.dispatch(method, path, query, user)
        except (psycopg2.Error, OSError) as e:
            log("ERROR", f"{method} {path}: {str(e).strip()}")
            self.send(500, web_message(500, "ERROR", str(e).strip()))

    def authenticate(self):
        """(username, authorities) from a Basic header checked against userinfo, or None."""
        header = self.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return None
        try:
            username, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return None
        conn = connect(State.conf, "http")
        try:
            cur = conn.cursor()
            cur.execute("SELECT userinfoid, password, coalesce(disabled, false) FROM public.userinfo "
                        "WHERE username = %s", (username,))
            row = cur.fetchone()
            if not row or row[2] or not row[1] or not row[1].startswith("$2"):
                return None
            try:
                if not bcrypt.checkpw(password.encode(), row[1].encode()):
                    return None
            except ValueError:
                return None
            cur.execute("SELECT to_regclass('public.userroleauthorities') IS NOT NULL")
            authorities = set()
            if cur.fetchone()[0]:
                cur.execute("SELECT DISTINCT a.authority FROM public.userrolemembers m JOIN "
                            "public.userroleauthorities a USING (userroleid) WHERE m.userid = %s",
                            (row[0],))
                authorities = {a for (a,) in cur.fetchall() if a}
            return username, authorities
        finally:
            close(conn)

    def dispatch(self, method, path, query, user):
        username, authorities = user
        read_only = on(State.conf.get("system.read_only_mode"))
        if path == "/api/system/info" and method == "GET":
            return self.send(200, system_info(self.headers.get("Host", ""), "ALL" in authorities))
        if path == "/api/me" and method == "GET":
            return self.send(200, {"username": username, "authorities": sorted(authorities)})
        if path == "/api/resourceTables/analytics" and method == "POST":
            if not authorities & {"ALL", "F_PERFORM_MAINTENANCE"}:
                return self.send(403, web_message(403, "ERROR", "Access is denied, requires one "
                                                  "Authority from [F_PERFORM_MAINTENANCE]"))
            if read_only:
                return self.send(403, web_message(403, "ERROR", "The system is in read-only mode"))
            return self.analytics(username)
        if path == "/api/fileResources" and method == "POST":
            if read_only:
                return self.send(403, web_message(403, "ERROR", "The system is in read-only mode"))
            return self.save_file(query, username)
        m = re.fullmatch(r"/api/fileResources/([A-Za-z0-9]{11})(/data)?", path)
        if m and method == "GET":
            return self.read_file(m.group(1), bool(m.group(2)))
        self.send(404, web_message(404, "ERROR", f"{method} {path} not found"))

    def analytics(self, username):
        with State.lock:
            if State.analytics_running:
                return self.send(409, web_message(409, "ERROR", "Analytics table generation is "
                                                  "already running"))
            State.analytics_running = True
        job = new_uid()
        log("INFO", f"Analytics table generation requested by {username}",
            "ResourceTableController.java")
        threading.Thread(target=analytics_job, args=(job,), daemon=True).start()
        self.send(200, web_message(200, "OK", "Initiated inMemoryAnalyticsJob", response={
            "responseType": "JobConfigurationWebMessageResponse", "name": "inMemoryAnalyticsJob",
            "id": job, "created": now_text(), "jobType": "ANALYTICS_TABLE",
            "jobStatus": "SCHEDULED",
            "relativeNotifierEndpoint": f"/api/system/tasks/ANALYTICS_TABLE/{job}"}))

    def files_dir(self):
        if State.conf.get("filestore.provider", "filesystem") != "filesystem":
            return None
        return os.path.join(HOME, "files")

    def save_file(self, query, username):
        files = self.files_dir()
        if files is None:
            return self.send(500, web_message(500, "ERROR", "The stand-in stores files only with "
                                              "filestore.provider = filesystem"))
        params = dict(p.partition("=")[::2] for p in query.split("&") if p)
        domain = params.get("domain", "DOCUMENT").upper()
        if domain not in DOMAIN_FOLDERS:
            return self.send(409, web_message(409, "ERROR", f"Unknown domain {domain}"))
        data, name = self.payload, "upload"
        ctype = self.headers.get("Content-Type", "application/octet-stream")
        if ctype.startswith("multipart/form-data"):
            message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + data)
            part = next((p for p in message.iter_parts()
                         if p.get_param("name", header="content-disposition") == "file"), None)
            if part is None:
                return self.send(409, web_message(409, "ERROR", "Required part 'file' is not present"))
            data, ctype = part.get_payload(decode=True), part.get_content_type()
            name = part.get_filename() or name
        uid = new_uid()
        folder = os.path.join(files, DOMAIN_FOLDERS[domain])
        os.makedirs(folder, exist_ok=True)
        tmp = os.path.join(folder, f".{uid}.partial")
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, os.path.join(folder, uid))
        meta = {"id": uid, "name": name, "contentType": ctype, "contentLength": len(data),
                "contentMd5": hashlib.md5(data).hexdigest(), "domain": domain,
                "storageStatus": "STORED", "created": now_text(), "createdBy": username}
        with open(os.path.join(folder, f".{uid}.json"), "w") as f:
            json.dump(meta, f)
        log("INFO", f"File resource {uid} ({len(data)} bytes) stored by {username}",
            "FileResourceController.java")
        self.send(202, web_message(202, "OK", None, response={
            "responseType": "FileResource", "fileResource": meta}))

    def read_file(self, uid, data):
        files = self.files_dir()
        for folder in DOMAIN_FOLDERS.values():
            path = os.path.join(files or "/nonexistent", folder, uid)
            if os.path.isfile(path):
                try:
                    with open(os.path.join(files, folder, f".{uid}.json")) as f:
                        meta = json.load(f)
                except (OSError, ValueError):
                    meta = {"id": uid, "contentType": "application/octet-stream"}
                if not data:
                    return self.send(200, meta)
                with open(path, "rb") as f:
                    return self.send(200, f.read(), meta.get("contentType") or "application/octet-stream")
        self.send(404, web_message(404, "ERROR", f"FileResource with id {uid} could not be found."))


def now_text():
    return datetime.datetime.now().strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]


def analytics_job(job):
    """The job's effect the operator can see: keyLastSuccessfulAnalyticsTablesUpdate."""
    try:
        time.sleep(1)
        conn = connect(State.conf, "analytics")
        try:
            cur = conn.cursor()
            cur.execute("SELECT to_regclass('public.systemsetting') IS NOT NULL")
            if cur.fetchone()[0]:
                for key, value in (("keyLastSuccessfulAnalyticsTablesUpdate", now_text()),
                                   ("keyLastSuccessfulAnalyticsTablesRuntime", "1 sec")):
                    cur.execute("UPDATE public.systemsetting SET value = %s WHERE name = %s",
                                (value, key))
                    if cur.rowcount == 0:
                        cur.execute("INSERT INTO public.systemsetting (systemsettingid, name, value)"
                                    " VALUES (nextval('public.hibernate_sequence'), %s, %s)",
                                    (key, value))
            conn.commit()
        finally:
            close(conn)
        log("INFO", f"Analytics tables updated (job {job})", "AnalyticsTableJob.java")
    except psycopg2.Error as e:
        log("ERROR", f"Analytics table generation failed (job {job}): {str(e).strip()}",
            "AnalyticsTableJob.java")
    finally:
        with State.lock:
            State.analytics_running = False


def system_info(host, superuser):
    conf, db = State.conf, State.conf["_db"]
    settings, db_version = {}, None
    conn = connect(conf, "http")
    try:
        cur = conn.cursor()
        cur.execute("SHOW server_version")
        db_version = "PostgreSQL " + cur.fetchone()[0]
        cur.execute("SELECT to_regclass('public.systemsetting') IS NOT NULL")
        if cur.fetchone()[0]:
            cur.execute("SELECT name, value FROM public.systemsetting WHERE name IN "
                        "('keyLastSuccessfulAnalyticsTablesUpdate', "
                        "'keyLastSuccessfulAnalyticsTablesRuntime', 'keySystemIdentifier')")
            settings = dict(cur.fetchall())
    finally:
        close(conn)
    info = {
        "contextPath": f"http://{host}" if host else "", "calendar": "iso8601",
        "dateFormat": "yyyy-mm-dd", "serverDate": now_text(), "serverTimeZoneId": "Etc/UTC",
        "version": VERSION, "revision": hashlib.sha256(VERSION.encode()).hexdigest()[:7],
        "buildTime": "2024-05-01T10:00:00.000", "environmentVariable": "DHIS2_HOME",
        "readOnlyMode": on(conf.get("system.read_only_mode")), "nodeId": NODE_ID,
        "systemId": settings.get("keySystemIdentifier")
        or str(uuid.uuid5(uuid.NAMESPACE_URL, conf["connection.url"])),
        "systemName": "DHIS 2", "instanceBaseUrl": conf.get("server.base.url", ""),
        "redisEnabled": False,   # the stand-in never uses Redis
        "encryption": bool(conf.get("encryption.password")), "emailConfigured": False,
        "isMetadataVersionEnabled": True, "metadataSyncEnabled": False,
        "fileStoreProvider": conf.get("filestore.provider", "filesystem"),
        "databaseInfo": {"spatialSupport": True},
    }
    if "keyLastSuccessfulAnalyticsTablesUpdate" in settings:
        info["lastAnalyticsTableSuccess"] = settings["keyLastSuccessfulAnalyticsTablesUpdate"]
        info["lastAnalyticsTableRuntime"] = settings.get("keyLastSuccessfulAnalyticsTablesRuntime")
    if superuser:   # DHIS2 strips these for everyone else
        info["databaseInfo"].update({
            "name": db["dbname"], "user": db["user"], "url": conf["connection.url"],
            "databaseVersion": db_version})
    return info


# --- main ---------------------------------------------------------------------------------

def stop(signum, _frame):
    threading.current_thread().name = "shutdown"
    log("INFO", f"Received {signal.Signals(signum).name}: shutting down", "StandIn.java")
    with State.lock:
        conns = list(State.connections)

    def close_all():   # an open migration dies with its connection: nothing is committed
        for conn in conns:
            try:
                conn.cancel()
                conn.close()
            except psycopg2.Error:
                pass
    closer = threading.Thread(target=close_all, daemon=True)
    closer.start()
    closer.join(2)   # the process exit closes whatever is left
    os._exit(143)


def main():
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server = ThreadingHTTPServer(("0.0.0.0", PORT), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    threading.Thread(target=start, name="main", daemon=True).start()
    while True:   # signals are handled here, in the main thread
        signal.pause()


if __name__ == "__main__":
    main()
