-- Stand-in for the social-insurance agency's own tables (schema si), as the mapping that
-- ships with Veil (builtin:social_insurance) maps them: aab998 (unified social credit
-- code) as the key, aab004 the unit name, the agency's band codes 1..6, months as YYYYMM.
CREATE SCHEMA IF NOT EXISTS si;
SET search_path = si;

CREATE TABLE ab07_yljf (            -- 企业职工基本养老保险缴费汇总
    aab998   varchar(20) PRIMARY KEY,
    aab004   text,
    aac_rsdc varchar(2),            -- headcount band 1..6
    aab_jfdc varchar(2),            -- contribution band 1..6
    aae002   varchar(6)             -- last normal month, YYYYMM
);

CREATE TABLE ab08_qjxx (            -- 欠缴信息
    aab998   varchar(20) PRIMARY KEY,
    aab004   text,
    aab_qjbz varchar(1)             -- 1 in arrears, 0 not
);

INSERT INTO ab07_yljf VALUES
    ('91110105MA01XK2R63', '北京示例科技有限公司', '3', '4', '202405'),
    ('91310115MA1K4B7C1Q', '上海样本贸易有限公司', '1', '1', '202311');
INSERT INTO ab08_qjxx VALUES
    ('91110105MA01XK2R63', '北京示例科技有限公司', '0'),
    ('91310115MA1K4B7C1Q', '上海样本贸易有限公司', '1');
