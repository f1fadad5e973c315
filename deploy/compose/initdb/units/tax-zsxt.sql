-- Stand-in for the tax bureau's own tables (schema zsxt), exactly as
-- deploy/config/mappings/tax.toml maps them: nsrsbh as the key, money in fen (bigint),
-- dates as YYYYMMDD text, the bureau's own code values.  A few synthetic rows.
CREATE SCHEMA IF NOT EXISTS zsxt;
SET search_path = zsxt;

CREATE TABLE nsxy_pjjg (            -- 纳税信用评价结果
    xh        bigserial PRIMARY KEY,
    nsrsbh    varchar(20) NOT NULL,
    nsrmc     text,
    pjnd      integer,
    nsxydj_dm varchar(2)            -- 01 A, 02 B, 03 M, 04 C, 05 D
);
CREATE INDEX nsxy_pjjg_nsrsbh ON nsxy_pjjg (nsrsbh);

CREATE TABLE fzcnsr_xx (            -- 非正常纳税户
    nsrsbh varchar(20) PRIMARY KEY,
    nsrmc  text,
    fzchbz char(1)                  -- Y / N
);

CREATE TABLE qs_xx (                -- 欠税信息
    nsrsbh  varchar(20) PRIMARY KEY,
    nsrmc   text,
    qsbz    char(1),
    qsje    bigint,                 -- fen
    zsxm_mc text
);

CREATE TABLE jsxx_ndhz (            -- 纳税信息 (last-year totals)
    nsrsbh     varchar(20) PRIMARY KEY,
    nsrmc      text,
    zzs_ynse   bigint,
    zzs_sjse   bigint,
    qysds_ynse bigint,
    qysds_sjse bigint,
    lxzcjsys   integer,
    zhzcjsrq   char(8)
);

INSERT INTO nsxy_pjjg (nsrsbh, nsrmc, pjnd, nsxydj_dm) VALUES
    ('91110105MA01XK2R63', '北京示例科技有限公司', 2023, '02'),
    ('91110105MA01XK2R63', '北京示例科技有限公司', 2024, '01'),
    ('91310115MA1K4B7C1Q', '上海样本贸易有限公司', 2024, '04');
INSERT INTO fzcnsr_xx VALUES
    ('91110105MA01XK2R63', '北京示例科技有限公司', 'N'),
    ('91310115MA1K4B7C1Q', '上海样本贸易有限公司', 'N');
INSERT INTO qs_xx VALUES
    ('91110105MA01XK2R63', '北京示例科技有限公司', 'N', 0, NULL),
    ('91310115MA1K4B7C1Q', '上海样本贸易有限公司', 'Y', 1234567, '增值税');
INSERT INTO jsxx_ndhz VALUES
    ('91110105MA01XK2R63', '北京示例科技有限公司', 52000000, 51800000, 13000000, 13000000, 36, '20240315'),
    ('91310115MA1K4B7C1Q', '上海样本贸易有限公司', 8000000, 6500000, 1200000, 900000, 7, '20231120');
