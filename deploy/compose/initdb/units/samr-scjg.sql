-- Stand-in for the market regulator's registration tables (schema samr), as the mapping
-- that ships with Veil (builtin:samr) maps them: uniscid (unified social credit code) as
-- the key, E_* registration and AN_* annual-report tables, status codes of the regulator.
-- Registration (e_baseinfo) is what the platform aggregates physically; a lookup of an
-- enterprise the registration data does not know is refused.  A few synthetic rows.
CREATE SCHEMA IF NOT EXISTS samr;
SET search_path = samr;

CREATE TABLE an_baseinfo (
    ancheid SERIAL NOT NULL,
    uniscid VARCHAR(18) NOT NULL,
    entname TEXT,
    ancheyear BIGINT,
    assgro NUMERIC(20, 4),
    totequ NUMERIC(20, 4),
    vendinc NUMERIC(20, 4),
    progro NUMERIC(20, 4),
    netinc NUMERIC(20, 4),
    ratgro NUMERIC(20, 4),
    liagro NUMERIC(20, 4),
    forguaranteeis VARCHAR(16),
    empnum BIGINT,
    PRIMARY KEY (ancheid)
);
CREATE INDEX ix_an_baseinfo_uniscid ON an_baseinfo (uniscid);

CREATE TABLE e_abnormal (
    uniscid VARCHAR(18) NOT NULL,
    entname TEXT,
    isabnormal VARCHAR(16),
    specause VARCHAR(16),
    abntime DATE,
    PRIMARY KEY (uniscid)
);

CREATE TABLE e_alter_recoder (
    altid SERIAL NOT NULL,
    uniscid VARCHAR(18) NOT NULL,
    entname TEXT,
    altitem_cn TEXT,
    altbe TEXT,
    altaf TEXT,
    altdate DATE,
    PRIMARY KEY (altid)
);
CREATE INDEX ix_e_alter_recoder_uniscid ON e_alter_recoder (uniscid);

CREATE TABLE e_baseinfo (
    uniscid VARCHAR(18) NOT NULL,
    entname TEXT,
    name TEXT,
    estdate DATE,
    dom TEXT,
    regorg TEXT,
    regstate VARCHAR(16),
    PRIMARY KEY (uniscid)
);

CREATE TABLE e_branch (
    brid SERIAL NOT NULL,
    uniscid VARCHAR(18) NOT NULL,
    entname TEXT,
    brname TEXT,
    bruniscid VARCHAR(64),
    brprincipal TEXT,
    brestdate DATE,
    brdom TEXT,
    brregstate VARCHAR(16),
    brregorg TEXT,
    PRIMARY KEY (brid)
);
CREATE INDEX ix_e_branch_uniscid ON e_branch (uniscid);

CREATE TABLE e_industry (
    uniscid VARCHAR(18) NOT NULL,
    entname TEXT,
    industryco VARCHAR(64),
    PRIMARY KEY (uniscid)
);

CREATE TABLE e_inv_investment (
    invid SERIAL NOT NULL,
    uniscid VARCHAR(18) NOT NULL,
    entname TEXT,
    inv TEXT,
    invtype_cn TEXT,
    conprop NUMERIC(20, 4),
    acconam NUMERIC(20, 4),
    conform_cn TEXT,
    subconam NUMERIC(20, 4),
    PRIMARY KEY (invid)
);
CREATE INDEX ix_e_inv_investment_uniscid ON e_inv_investment (uniscid);

CREATE TABLE e_opscope (
    uniscid VARCHAR(18) NOT NULL,
    opscope TEXT,
    enttype_cn TEXT,
    regcap NUMERIC(20, 4),
    opfrom DATE,
    opto DATE,
    PRIMARY KEY (uniscid)
);

CREATE TABLE e_serious_illegal (
    illid SERIAL NOT NULL,
    uniscid VARCHAR(18) NOT NULL,
    entname TEXT,
    serillrea TEXT,
    abntime DATE,
    decorg TEXT,
    remexcpres TEXT,
    remdate DATE,
    redecorg TEXT,
    PRIMARY KEY (illid)
);
CREATE INDEX ix_e_serious_illegal_uniscid ON e_serious_illegal (uniscid);

CREATE TABLE e_spot_check (
    uniscid VARCHAR(18) NOT NULL,
    entname TEXT,
    unqualcnt3y BIGINT,
    PRIMARY KEY (uniscid)
);

CREATE TABLE e_stock_pledge (
    stkpawnid SERIAL NOT NULL,
    uniscid VARCHAR(18) NOT NULL,
    entname TEXT,
    stkpawnregno VARCHAR(64),
    stkpawnor TEXT,
    stkpawnorblicno VARCHAR(64),
    impam NUMERIC(20, 4),
    imporg TEXT,
    imporgblicno VARCHAR(64),
    stkpawnregdate DATE,
    publicdate DATE,
    stkpawnstatus VARCHAR(16),
    PRIMARY KEY (stkpawnid)
);
CREATE INDEX ix_e_stock_pledge_uniscid ON e_stock_pledge (uniscid);

INSERT INTO e_baseinfo (uniscid, entname, name, estdate, dom, regorg, regstate) VALUES
    ('91110105MA01XK2R63', '北京示例科技有限公司', '张示例', '2016-04-12',
     '北京市朝阳区示例路1号', '北京市朝阳区市场监督管理局', '1'),
    ('91310115MA1K4B7C1Q', '上海样本贸易有限公司', '李样本', '2018-09-30',
     '上海市浦东新区样本路2号', '上海市浦东新区市场监督管理局', '1');
INSERT INTO e_opscope (uniscid, opscope, enttype_cn, regcap, opfrom, opto) VALUES
    ('91110105MA01XK2R63', '技术开发、技术咨询、技术服务', '有限责任公司', 1000, '2016-04-12', NULL),
    ('91310115MA1K4B7C1Q', '货物进出口、技术进出口', '有限责任公司', 500, '2018-09-30', '2038-09-29');
INSERT INTO e_industry (uniscid, entname, industryco) VALUES
    ('91110105MA01XK2R63', '北京示例科技有限公司', 'I65'),
    ('91310115MA1K4B7C1Q', '上海样本贸易有限公司', 'F51');
