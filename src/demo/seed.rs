//! `demo seed`: a deterministic, DHIS2-shaped database. An organisation-unit hierarchy shaped like
//! Cambodia's (national, 25 provinces, ~100 operational districts, ~1,200 health centres with
//! point geometries and Khmer names), data elements, category option combos, monthly periods, a
//! large `datavalue` table, `datavalueaudit`, analytics and resource tables with data, a
//! materialized view, `flyway_schema_history`, and sequences advanced past 2^32.

use std::time::Instant;

use clap::ValueEnum;
use serde::Serialize;

use crate::backup::error::BackupError;
use crate::backup::inventory;
use crate::postgres::{DatabaseTarget, describe_pg_error};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Scale {
    /// ~150 thousand data values: seconds.
    Small,
    /// ~1.4 million data values.
    Medium,
    /// ~14 million data values, over 1 GB: for benchmarks.
    Large,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScaleShape {
    pub data_elements: u32,
    pub months: u32,
    pub category_option_combos: u32,
}

impl Scale {
    pub fn shape(self) -> ScaleShape {
        match self {
            Scale::Small => ScaleShape {
                data_elements: 25,
                months: 5,
                category_option_combos: 1,
            },
            Scale::Medium => ScaleShape {
                data_elements: 50,
                months: 24,
                category_option_combos: 1,
            },
            Scale::Large => ScaleShape {
                data_elements: 100,
                months: 60,
                category_option_combos: 2,
            },
        }
    }
}

pub const HEALTH_CENTRES_PER_DISTRICT: u32 = 12;
pub const DISTRICTS_PER_PROVINCE: u32 = 4;

/// Cambodia's 25 provinces: English name, Khmer name, approximate centre (lon, lat).
pub const PROVINCES: [(&str, &str, f64, f64); 25] = [
    ("Banteay Meanchey", "បន្ទាយមានជ័យ", 102.98, 13.75),
    ("Battambang", "បាត់ដំបង", 103.20, 13.10),
    ("Kampong Cham", "កំពង់ចាម", 105.46, 12.00),
    ("Kampong Chhnang", "កំពង់ឆ្នាំង", 104.67, 12.25),
    ("Kampong Speu", "កំពង់ស្ពឺ", 104.52, 11.45),
    ("Kampong Thom", "កំពង់ធំ", 104.89, 12.71),
    ("Kampot", "កំពត", 104.18, 10.61),
    ("Kandal", "កណ្ដាល", 104.95, 11.47),
    ("Koh Kong", "កោះកុង", 103.48, 11.62),
    ("Kratie", "ក្រចេះ", 106.02, 12.49),
    ("Mondulkiri", "មណ្ឌលគិរី", 107.20, 12.45),
    ("Phnom Penh", "ភ្នំពេញ", 104.92, 11.56),
    ("Preah Vihear", "ព្រះវិហារ", 104.97, 13.80),
    ("Prey Veng", "ព្រៃវែង", 105.33, 11.48),
    ("Pursat", "ពោធិ៍សាត់", 103.92, 12.54),
    ("Ratanakiri", "រតនគិរី", 106.98, 13.74),
    ("Siem Reap", "សៀមរាប", 103.86, 13.36),
    ("Preah Sihanouk", "ព្រះសីហនុ", 103.53, 10.63),
    ("Stung Treng", "ស្ទឹងត្រែង", 105.97, 13.53),
    ("Svay Rieng", "ស្វាយរៀង", 105.80, 11.09),
    ("Takeo", "តាកែវ", 104.80, 10.99),
    ("Oddar Meanchey", "ឧត្ដរមានជ័យ", 103.52, 14.16),
    ("Kep", "កែប", 104.32, 10.48),
    ("Pailin", "ប៉ៃលិន", 102.61, 12.85),
    ("Tbong Khmum", "ត្បូងឃ្មុំ", 105.64, 11.92),
];

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SeedReport {
    pub database: String,
    pub scale: Scale,
    pub organisation_units: i64,
    pub data_values: i64,
    pub database_bytes: i64,
    pub seconds: f64,
}

/// The SQL that builds the demo database (pure, deterministic for a scale).
pub fn seed_sql(scale: Scale) -> String {
    let shape = scale.shape();
    let provinces = PROVINCES
        .iter()
        .enumerate()
        .map(|(i, (en, km, lon, lat))| {
            format!(
                "({}, '{}', '{}', {lon}, {lat})",
                i + 1,
                en.replace('\'', "''"),
                km
            )
        })
        .collect::<Vec<_>>()
        .join(",\n  ");
    let districts = DISTRICTS_PER_PROVINCE;
    let centres = HEALTH_CENTRES_PER_DISTRICT;
    let des = shape.data_elements;
    let months = shape.months;
    let cocs = shape.category_option_combos;
    format!(
        r#"
CREATE EXTENSION IF NOT EXISTS postgis;

CREATE TABLE periodtype (periodtypeid integer PRIMARY KEY, name varchar(50) NOT NULL UNIQUE);
INSERT INTO periodtype VALUES (1, 'Monthly'), (2, 'Quarterly'), (3, 'Yearly');

CREATE TABLE period (
  periodid bigint PRIMARY KEY, periodtypeid integer NOT NULL REFERENCES periodtype,
  startdate date NOT NULL, enddate date NOT NULL, UNIQUE (periodtypeid, startdate, enddate));
INSERT INTO period
SELECT 1000 + m, 1, d::date, (d + interval '1 month - 1 day')::date
FROM generate_series(0, {months} - 1) AS m,
     LATERAL (SELECT date '2021-01-01' + make_interval(months => m) AS d) AS s;

CREATE TABLE organisationunit (
  organisationunitid bigint PRIMARY KEY, uid varchar(11) NOT NULL UNIQUE, code varchar(50) UNIQUE,
  name varchar(230) NOT NULL, shortname varchar(50) NOT NULL, parentid bigint REFERENCES organisationunit,
  path varchar(255), hierarchylevel integer, openingdate date, geometry geometry,
  created timestamp NOT NULL, lastupdated timestamp NOT NULL);

CREATE TEMP TABLE province_seed (n int, en text, km text, lon float8, lat float8);
INSERT INTO province_seed VALUES
  {provinces};

INSERT INTO organisationunit VALUES (1, 'KH000000001', 'KH', 'ព្រះរាជាណាចក្រកម្ពុជា (Cambodia)', 'Cambodia',
  NULL, '/KH000000001', 1, date '1979-01-07',
  ST_GeomFromText('POLYGON((102.3 10.4,107.6 10.4,107.6 14.7,102.3 14.7,102.3 10.4))', 4326),
  timestamp '2015-01-01', timestamp '2015-01-01');

INSERT INTO organisationunit
SELECT 100 + n, 'PR' || lpad(n::text, 9, '0'), 'KH-P' || n, 'ខេត្ត' || km || ' (' || en || ')', left(en, 50),
  1, '/KH000000001/PR' || lpad(n::text, 9, '0'), 2, date '1979-01-07',
  ST_MakeEnvelope(lon - 0.25, lat - 0.2, lon + 0.25, lat + 0.2, 4326),
  timestamp '2015-01-01', timestamp '2015-01-01'
FROM province_seed;

INSERT INTO organisationunit
SELECT 1000 + (p.n - 1) * {districts} + d, 'OD' || lpad(((p.n - 1) * {districts} + d)::text, 9, '0'),
  'KH-OD' || ((p.n - 1) * {districts} + d),
  'ស្រុកប្រតិបត្តិ' || p.km || ' ' || d, left(p.en || ' OD ' || d, 50),
  100 + p.n, '/KH000000001/PR' || lpad(p.n::text, 9, '0') || '/OD' || lpad(((p.n - 1) * {districts} + d)::text, 9, '0'),
  3, date '1995-01-01', NULL, timestamp '2015-01-01', timestamp '2015-01-01'
FROM province_seed p, generate_series(1, {districts}) AS d;

INSERT INTO organisationunit
SELECT 10000 + od.organisationunitid * 100 + h, 'HC' || lpad((od.organisationunitid * 100 + h)::text, 9, '0'),
  'KH-HC' || (od.organisationunitid * 100 + h),
  'មណ្ឌលសុខភាព ' || split_part(od.name, ' ', 1) || ' ' || h, left(od.shortname || ' HC ' || h, 50),
  od.organisationunitid, od.path || '/HC' || lpad((od.organisationunitid * 100 + h)::text, 9, '0'),
  4, date '2000-01-01' + (h * 30),
  ST_SetSRID(ST_MakePoint(p.lon - 0.2 + ((od.organisationunitid * 37 + h * 11) % 40) / 100.0,
                          p.lat - 0.15 + ((od.organisationunitid * 53 + h * 7) % 30) / 100.0), 4326),
  timestamp '2015-01-01', timestamp '2015-01-01'
FROM organisationunit od JOIN province_seed p ON od.parentid = 100 + p.n,
     generate_series(1, {centres}) AS h
WHERE od.hierarchylevel = 3;

CREATE TABLE dataelement (
  dataelementid bigint PRIMARY KEY, uid varchar(11) NOT NULL UNIQUE, code varchar(50) UNIQUE,
  name varchar(230) NOT NULL UNIQUE, shortname varchar(50) NOT NULL, valuetype varchar(50) NOT NULL,
  aggregationtype varchar(50) NOT NULL, domaintype varchar(255) NOT NULL,
  created timestamp NOT NULL, lastupdated timestamp NOT NULL);
INSERT INTO dataelement
SELECT 5000 + i, 'DE' || lpad(i::text, 9, '0'), 'HMIS_DE_' || i,
  (ARRAY['ចំនួនអ្នកជំងឺក្រៅ', 'ការសម្រាលកូន', 'ការចាក់ថ្នាំបង្ការ', 'ជំងឺគ្រុនចាញ់', 'ការពិនិត្យផ្ទៃពោះ'])[1 + i % 5]
    || ' ' || i || ' (HMIS indicator ' || i || ')',
  'HMIS ' || i, 'INTEGER_ZERO_OR_POSITIVE', 'SUM', 'AGGREGATE', timestamp '2016-01-01', timestamp '2016-01-01'
FROM generate_series(1, {des}) AS i;

CREATE TABLE categoryoptioncombo (
  categoryoptioncomboid bigint PRIMARY KEY, uid varchar(11) NOT NULL UNIQUE, name varchar(230),
  ignoreapproval boolean, created timestamp NOT NULL, lastupdated timestamp NOT NULL);
INSERT INTO categoryoptioncombo VALUES
  (15, 'HllvX50cXC0', 'default', false, timestamp '2015-01-01', timestamp '2015-01-01'),
  (16, 'COC00000001', 'ស្រី (Female)', false, timestamp '2015-01-01', timestamp '2015-01-01'),
  (17, 'COC00000002', 'ប្រុស (Male)', false, timestamp '2015-01-01', timestamp '2015-01-01');

CREATE TABLE datavalue (
  dataelementid bigint NOT NULL, periodid bigint NOT NULL, sourceid bigint NOT NULL,
  categoryoptioncomboid bigint NOT NULL, attributeoptioncomboid bigint NOT NULL,
  value varchar(50000), storedby varchar(255), created timestamp NOT NULL, lastupdated timestamp NOT NULL,
  comment varchar(50000), followup boolean, deleted boolean NOT NULL DEFAULT false);
INSERT INTO datavalue
SELECT de.dataelementid, p.periodid, ou.organisationunitid, coc.categoryoptioncomboid, 15,
  (r.h % 5000)::text,
  'hmis.user' || (r.h % 487),
  p.startdate + interval '31 days' + make_interval(secs => r.h % 1209600),
  p.startdate + interval '31 days' + make_interval(secs => r.h % 1209600 + (r.h * 7) % 172800),
  CASE WHEN r.h % 31 = 0 THEN 'បានពិនិត្យឡើងវិញ (reviewed) ' || (r.h % 1000) END,
  false, false
FROM dataelement de, period p, organisationunit ou,
     (SELECT categoryoptioncomboid FROM categoryoptioncombo
      WHERE {cocs} = 1 AND categoryoptioncomboid = 15 OR {cocs} > 1 AND categoryoptioncomboid > 15) AS coc,
     -- A deterministic per-row hash: values, users and times vary like real entries do.
     LATERAL (SELECT ((de.dataelementid * 7919 + p.periodid * 104729 + ou.organisationunitid * 31
                       + coc.categoryoptioncomboid) * 2654435761) % 1000003 AS h) AS r
WHERE ou.hierarchylevel = 4;
ALTER TABLE datavalue ADD PRIMARY KEY (dataelementid, periodid, sourceid, categoryoptioncomboid, attributeoptioncomboid),
  ADD FOREIGN KEY (dataelementid) REFERENCES dataelement, ADD FOREIGN KEY (periodid) REFERENCES period,
  ADD FOREIGN KEY (sourceid) REFERENCES organisationunit,
  ADD FOREIGN KEY (categoryoptioncomboid) REFERENCES categoryoptioncombo;
CREATE INDEX in_datavalue_lastupdated ON datavalue (lastupdated);

CREATE SEQUENCE datavalueaudit_sequence START 1;
CREATE TABLE datavalueaudit (
  datavalueauditid bigint PRIMARY KEY DEFAULT nextval('datavalueaudit_sequence'),
  dataelementid bigint NOT NULL, periodid bigint NOT NULL, organisationunitid bigint NOT NULL,
  categoryoptioncomboid bigint NOT NULL, attributeoptioncomboid bigint NOT NULL,
  value varchar(50000), created timestamp, modifiedby varchar(100), audittype varchar(100) NOT NULL);
SELECT setval('datavalueaudit_sequence', 7000000000);
INSERT INTO datavalueaudit (dataelementid, periodid, organisationunitid, categoryoptioncomboid,
  attributeoptioncomboid, value, created, modifiedby, audittype)
SELECT dataelementid, periodid, sourceid, categoryoptioncomboid, attributeoptioncomboid,
  value, lastupdated, storedby, 'UPDATE'
FROM datavalue WHERE (sourceid + periodid + dataelementid) % 100 = 0;

CREATE SEQUENCE hibernate_sequence START 1;
SELECT setval('hibernate_sequence', 4294967396);

CREATE TABLE analyticstablehook (
  analyticstablehookid bigint PRIMARY KEY, uid varchar(11) NOT NULL UNIQUE, name varchar(230) NOT NULL,
  phase varchar(50) NOT NULL, resourcetabletype varchar(50), analyticstabletype varchar(50), sql text NOT NULL,
  created timestamp NOT NULL, lastupdated timestamp NOT NULL);
INSERT INTO analyticstablehook VALUES
  (1, 'AtHook00001', 'Fix org unit names', 'RESOURCE_TABLE_POPULATED', 'ORG_UNIT_STRUCTURE', NULL,
   'update analytics_rs_orgunitstructure set level = level', timestamp '2020-01-01', timestamp '2020-01-01'),
  (2, 'AtHook00002', 'Province totals', 'ANALYTICS_TABLE_POPULATED', NULL, 'DATA_VALUE',
   'update analytics set value = value', timestamp '2020-01-01', timestamp '2020-01-01');

CREATE TABLE flyway_schema_history (
  installed_rank integer PRIMARY KEY, version varchar(50), description varchar(200) NOT NULL,
  type varchar(20) NOT NULL, script varchar(1000) NOT NULL, checksum integer,
  installed_by varchar(100) NOT NULL, installed_on timestamp NOT NULL DEFAULT now(),
  execution_time integer NOT NULL, success boolean NOT NULL);
INSERT INTO flyway_schema_history
SELECT row_number() OVER (ORDER BY minor, patch), '2.' || minor || '.' || patch,
  'migration ' || minor || '.' || patch, 'SQL',
  'V2_' || minor || '_' || patch || '__migration.sql', (minor * 1000 + patch), 'dhis',
  timestamp '2019-01-01' + make_interval(days => minor * 30 + patch), 10, true
FROM generate_series(30, 41) AS minor, generate_series(1, 38) AS patch
WHERE minor = 41 OR patch <= 20;
INSERT INTO flyway_schema_history VALUES
  (10000, NULL, 'repeatable view refresh', 'SQL', 'R__views.sql', 1, 'dhis', timestamp '2024-01-01', 5, true),
  (10001, '2.42.1', 'failed migration of a newer version', 'SQL', 'V2_42_1__x.sql', 2, 'dhis',
   timestamp '2024-01-02', 5, false);

CREATE TABLE _orgunitstructure (
  organisationunitid bigint PRIMARY KEY, organisationunituid character(11), level integer,
  idlevel1 bigint, idlevel2 bigint, idlevel3 bigint, idlevel4 bigint);
INSERT INTO _orgunitstructure
SELECT ou.organisationunitid, ou.uid, ou.hierarchylevel, 1,
  CASE WHEN ou.hierarchylevel >= 2 THEN coalesce(pp.organisationunitid, p.organisationunitid, ou.organisationunitid) END,
  CASE WHEN ou.hierarchylevel >= 3 THEN coalesce(p.organisationunitid, ou.organisationunitid) END,
  CASE WHEN ou.hierarchylevel = 4 THEN ou.organisationunitid END
FROM organisationunit ou LEFT JOIN organisationunit p ON ou.parentid = p.organisationunitid AND ou.hierarchylevel = 4
LEFT JOIN organisationunit pp ON p.parentid = pp.organisationunitid;

CREATE TABLE _periodstructure (periodid bigint PRIMARY KEY, iso varchar(15) NOT NULL, year integer, month integer);
INSERT INTO _periodstructure SELECT periodid, to_char(startdate, 'YYYYMM'),
  extract(year FROM startdate), extract(month FROM startdate) FROM period;

CREATE TABLE analytics_rs_dataelementstructure (dataelementid bigint PRIMARY KEY, dataelementuid character(11), valuetype varchar(50));
INSERT INTO analytics_rs_dataelementstructure SELECT dataelementid, uid, valuetype FROM dataelement;

DO $$
DECLARE y integer;
BEGIN
  FOR y IN SELECT DISTINCT extract(year FROM startdate)::int FROM period ORDER BY 1 LOOP
    EXECUTE format($f$
      CREATE UNLOGGED TABLE analytics_%1$s AS
      SELECT de.uid AS dx, coc.uid AS co, 'HllvX50cXC0'::varchar(11) AS ao, ps.iso AS pe,
             ou.uid AS ou, s.idlevel2 AS uidlevel2, s.idlevel3 AS uidlevel3, %1$s AS year,
             dv.value::double precision AS value
      FROM datavalue dv
      JOIN dataelement de USING (dataelementid)
      JOIN categoryoptioncombo coc ON coc.categoryoptioncomboid = dv.categoryoptioncomboid
      JOIN _periodstructure ps ON ps.periodid = dv.periodid
      JOIN organisationunit ou ON ou.organisationunitid = dv.sourceid
      JOIN _orgunitstructure s ON s.organisationunitid = dv.sourceid
      WHERE ps.year = %1$s$f$, y);
  END LOOP;
END$$;

CREATE TABLE analytics_event_hmisprog01 (
  psi character(11) NOT NULL, ou character(11) NOT NULL, executiondate date, geometry geometry(Point, 4326), value text);
INSERT INTO analytics_event_hmisprog01
SELECT 'EV' || lpad(i::text, 9, '0'), ou.uid, date '2024-01-01' + (i % 365), ou.geometry, 'ករណី ' || i
FROM generate_series(1, 20) AS i, organisationunit ou WHERE ou.hierarchylevel = 4;

CREATE MATERIALIZED VIEW _view_province_reporting AS
SELECT p.name AS province, count(*) AS data_values, sum(dv.value::bigint) AS total
FROM datavalue dv JOIN organisationunit hc ON hc.organisationunitid = dv.sourceid
JOIN organisationunit od ON od.organisationunitid = hc.parentid
JOIN organisationunit p ON p.organisationunitid = od.parentid
GROUP BY p.name;

ANALYZE;
"#
    )
}

pub async fn seed_demo(db: &DatabaseTarget, scale: Scale) -> Result<SeedReport, BackupError> {
    let started = Instant::now();
    let client = db.connect().await?;
    let (count, examples) = inventory::user_relations(db, &client).await?;
    if count > 0 {
        return Err(BackupError::Input(format!(
            "--database-url: {db} is not empty ({count} relations, e.g. {}); demo seed only writes into an empty database (CREATE DATABASE dhis2_demo)",
            examples.join(", ")
        )));
    }
    client
        .batch_execute(&format!("BEGIN; {} COMMIT;", seed_sql(scale)))
        .await
        .map_err(|e| {
            BackupError::Input(format!("seeding {db} failed: {}", describe_pg_error(&e)))
        })?;
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM organisationunit), (SELECT count(*) FROM datavalue),
                    pg_database_size(current_database())",
            &[],
        )
        .await
        .map_err(|e| db.query_error("summarising the demo database", e))?;
    Ok(SeedReport {
        database: db.to_string(),
        scale,
        organisation_units: row.get(0),
        data_values: row.get(1),
        database_bytes: row.get(2),
        seconds: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hierarchy_is_shaped_like_cambodia() {
        assert_eq!(PROVINCES.len(), 25);
        let districts = 25 * DISTRICTS_PER_PROVINCE;
        assert!((95..=110).contains(&districts));
        let centres = districts * HEALTH_CENTRES_PER_DISTRICT;
        assert!((1100..=1300).contains(&centres));
    }

    #[test]
    fn seed_sql_is_deterministic_and_scaled() {
        assert_eq!(seed_sql(Scale::Small), seed_sql(Scale::Small));
        assert_ne!(seed_sql(Scale::Small), seed_sql(Scale::Large));
        let large = Scale::Large.shape();
        let rows = 1200 * large.data_elements * large.months * large.category_option_combos;
        assert!(
            rows > 10_000_000,
            "large holds many millions of data values"
        );
    }
}
