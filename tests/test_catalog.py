"""The annex catalog against the annex itself.

The annex table (附件：信用信息共享清单) is parsed straight out of the seed text, so the catalog is
checked item by item against the authoritative Chinese, not against a copy of itself.
"""

from __future__ import annotations

import copy
import re
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from veil.catalog import (
    Catalog,
    Classification,
    FieldType,
    SharingMode,
    load_catalog,
    parse_catalog,
)
from veil.errors import ConfigError, InvalidArgument

# The plan's full text (国办发〔2021〕52号), kept in the repository so this test always runs.
SEED = Path(__file__).resolve().parent / "data" / "guobanfa-2021-52.txt"


# --- the annex, parsed from the seed ----------------------------------------------------------


@dataclass
class AnnexRow:
    number: int
    category: str
    subitem: str | None
    items: list[str]
    sharing: str
    unit: str
    completion: str


def split_items(content: str) -> list[str]:
    """Split 共享内容 on 、, but not inside brackets (获得科研支持信息（实验室建设、…）)."""
    items, depth, cur = [], 0, ""
    for ch in content:
        depth += (ch in "（(") - (ch in "）)")
        if ch == "、" and depth == 0:
            items.append(cur)
            cur = ""
        else:
            cur += ch
    return [*items, cur]


def parse_annex(text: str) -> list[AnnexRow]:
    """Rows of the annex table.

    Cells are tab-separated; the last four are always 共享内容, 共享方式, 责任单位, 完成时间, and
    the leading cells hold 序号, 信息种类 and the sub-item name when the row has them.
    """
    lines = text.split("\n")
    start = lines.index("附件：信用信息共享清单")
    rows: list[AnnexRow] = []
    number, category = 0, ""
    for line in lines[start + 1 :]:
        if line.startswith("注："):
            break
        cells = line.split("\t")
        while cells and not cells[-1].strip():
            cells.pop()
        if not cells or cells[0] == "序号":  # blank line or the header row
            continue
        content, sharing, unit, completion = cells[-4:]
        lead = [c.strip() for c in cells[:-4]]
        if lead and lead[0].isdigit():
            number, category = int(lead[0]), lead[1]
            lead = lead[2:]
        named = [c for c in lead if c]
        rows.append(
            AnnexRow(
                number,
                category,
                named[-1] if named else None,
                split_items(content),
                sharing,
                unit,
                completion,
            )
        )
    return rows


@pytest.fixture(scope="module")
def annex() -> list[AnnexRow]:
    return parse_annex(SEED.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog()


@pytest.fixture()
def raw() -> dict[str, Any]:
    """A fresh, mutable copy of the packaged TOML document, for the loader's error tests."""
    text = resources.files("veil.catalog").joinpath("annex.toml").read_text(encoding="utf-8")
    return copy.deepcopy(tomllib.loads(text))


# Compound annex items the catalog splits into several fields (the TOML records each field's
# source item in ``annex_item``); every split must be listed here and nowhere else.
SPLITS = {
    "分支机构名称和统一社会信用代码": 2,
    "企业破产程序受理时间及受理法院": 2,
    "结案方式及日期": 2,
    "环保信用评价分值和等级": 2,
    "暂扣或吊销证照名称及编号": 2,
    "水用户信息(户名/户号)": 2,
    "燃气用户信息(户名/户号)": 2,
    "获得科研支持信息（实验室建设、政府资金支持、参与标准制定、人才认证等）": 4,
}

CATEGORIES = [
    ("market_registration", "samr"),
    ("judicial", "court"),
    ("tax", "tax"),
    ("housing_fund", "housing_fund"),
    ("social_insurance", "social_insurance"),
    ("environment", "environment"),
    ("customs", "customs"),
    ("ip", "ip_office"),
    ("software_copyright", "copyright"),
    ("real_estate", "real_estate"),
    ("administrative", "ndrc"),
    ("utilities", "utilities"),
    ("science", "science"),
    ("agriculture", "agriculture"),
]

PA, IC, DV = (
    SharingMode.PHYSICAL_AGGREGATION,
    SharingMode.INTERFACE_CALL,
    SharingMode.DATA_VERIFICATION,
)
# The English guide's table: dataset -> (mode, enterprise authorization), in annex order.
GUIDE = {
    "samr_basic": (PA, False),
    "samr_scope": (IC, True),
    "samr_changes": (IC, True),
    "samr_industry": (IC, True),
    "samr_shareholders": (IC, True),
    "samr_branches": (IC, True),
    "samr_equity_pledges": (IC, True),
    "samr_annual_report": (IC, True),
    "samr_abnormal_list": (IC, False),
    "samr_serious_violation": (IC, False),
    "samr_spot_checks": (IC, False),
    "court_judgments": (IC, False),
    "court_terminated_cases": (IC, False),
    "court_dishonest_debtors": (PA, False),
    "court_bankruptcy": (IC, False),
    "tax_credit_grade": (IC, True),
    "tax_abnormal": (IC, True),
    "tax_arrears": (IC, True),
    "tax_payments": (IC, True),
    "housing_fund_contributions": (IC, True),
    "si_pension": (DV, True),
    "si_arrears": (IC, True),
    "env_credit": (PA, False),
    "customs_registration": (PA, False),
    "customs_credit_grade": (PA, False),
    "ip_trademarks": (PA, False),
    "ip_patents": (IC, False),
    "software_copyrights": (PA, False),
    "re_properties": (DV, True),
    "re_mortgages": (DV, True),
    "admin_licences": (PA, False),
    "admin_penalties": (PA, False),
    "admin_enforcement": (PA, False),
    "util_water": (IC, True),
    "util_electricity": (IC, True),
    "util_gas": (IC, True),
    "science_rd": (IC, True),
    "agri_entities": (IC, True),
}

# Field ids other areas code against; renaming one is a breaking change.
PINNED_FIELDS = {
    "samr_basic": "samr_legal_rep samr_founding_date samr_address samr_reg_status "
    "samr_reg_authority",
    "samr_scope": "samr_business_scope samr_company_type samr_registered_capital samr_term_start "
    "samr_term_end",
    "samr_changes": "samr_change_item samr_change_before samr_change_after samr_change_date",
    "samr_industry": "samr_industry_code",
    "samr_shareholders": "samr_shareholder_name samr_shareholder_type samr_shareholding_ratio "
    "samr_contribution_paid samr_contribution_method samr_contribution_subscribed",
    "samr_branches": "samr_branch_name samr_branch_uscc samr_branch_head samr_branch_founding_date "
    "samr_branch_address samr_branch_reg_status samr_branch_reg_authority",
    "samr_equity_pledges": "samr_pledge_reg_no samr_pledgor samr_pledgor_id_no samr_pledged_amount "
    "samr_pledgee samr_pledgee_id_no samr_pledge_reg_date samr_pledge_publicity_date "
    "samr_pledge_status",
    "samr_annual_report": "samr_report_year samr_total_assets samr_owner_equity samr_total_revenue "
    "samr_total_profit samr_net_profit samr_total_tax samr_total_liabilities "
    "samr_external_guarantee samr_headcount",
    "samr_abnormal_list": "samr_abnormal_listed samr_abnormal_reason samr_abnormal_date",
    "samr_serious_violation": "samr_sv_reason_in samr_sv_date_in samr_sv_authority_in "
    "samr_sv_reason_out samr_sv_date_out samr_sv_authority_out",
    "samr_spot_checks": "samr_failed_checks_3y",
    "court_judgments": "court_judgment_cause court_judgment_case_no court_judgment_plaintiff "
    "court_judgment_plaintiff_id court_judgment_defendant court_judgment_defendant_id "
    "court_judgment_result court_judgment_court court_judgment_location "
    "court_judgment_publish_date",
    "court_terminated_cases": "court_terminated_case_no court_terminated_court "
    "court_terminated_filing_date court_terminated_date",
    "court_dishonest_debtors": "court_dishonest_case_no court_dishonest_legal_rep "
    "court_dishonest_performance court_dishonest_conduct court_dishonest_court "
    "court_dishonest_location court_dishonest_filing_date court_dishonest_publish_date",
    "court_bankruptcy": "court_bankruptcy_case_no court_bankruptcy_type "
    "court_bankruptcy_accepted_date court_bankruptcy_court court_bankruptcy_administrator "
    "court_bankruptcy_closure_method court_bankruptcy_closure_date",
    "tax_credit_grade": "tax_grade_year tax_grade",
    "tax_abnormal": "tax_abnormal_taxpayer",
    "tax_arrears": "tax_in_arrears tax_arrears_amount tax_arrears_tax_type",
    "tax_payments": "tax_vat_due_last_year tax_vat_paid_last_year tax_cit_due_last_year "
    "tax_cit_paid_last_year tax_consecutive_normal_months tax_last_normal_payment_date",
    "housing_fund_contributions": "hf_avg_monthly_contributors hf_total_contribution_last_year "
    "hf_consecutive_normal_months hf_last_normal_payment_date",
    "si_pension": "si_pension_headcount_band si_pension_contribution_band "
    "si_pension_last_normal_month",
    "si_arrears": "si_in_arrears",
    "re_properties": "re_certificate_no re_unit_no re_use re_location re_area re_term_end "
    "re_registry re_reg_date",
    "re_mortgages": "re_mortgagee re_mortgagee_id re_mortgage_cert_no re_mortgage_unit_no "
    "re_right_type re_mortgage_reg_date",
    "util_water": "util_water_account_name util_water_account_no util_water_payment_details "
    "util_water_avg_3m util_water_avg_6m util_water_in_arrears",
    "util_electricity": "util_elec_account_no util_elec_opening_date util_elec_use_type "
    "util_elec_province util_elec_city util_elec_voltage_level util_elec_risk_grade "
    "util_elec_avg_3m util_elec_avg_6m util_elec_avg_12m util_elec_in_arrears",
    "util_gas": "util_gas_account_name util_gas_account_no util_gas_payment_details "
    "util_gas_avg_3m util_gas_avg_6m util_gas_in_arrears",
}

# Commercial secrets on authorized interface calls (TOML header, rule 5): exact money figures of
# accounts, tax and contributions, and itemised payment records.
COMMERCIAL_SECRETS = {
    "samr_total_assets",
    "samr_owner_equity",
    "samr_total_revenue",
    "samr_total_profit",
    "samr_net_profit",
    "samr_total_tax",
    "samr_total_liabilities",
    "tax_arrears_amount",
    "tax_vat_due_last_year",
    "tax_vat_paid_last_year",
    "tax_cit_due_last_year",
    "tax_cit_paid_last_year",
    "hf_total_contribution_last_year",
    "util_water_payment_details",
    "util_gas_payment_details",
}


# --- the annex, row by row --------------------------------------------------------------------


def test_annex_parses_into_38_rows_of_14_categories(annex: list[AnnexRow]) -> None:
    assert len(annex) == 38
    assert sorted({r.number for r in annex}) == list(range(1, 15))
    assert annex[10].subitem == "抽查信息" and annex[10].number == 1  # the row without lead tabs
    assert "政府资金支持" not in annex[-2].items  # the bracketed list stays one item


def test_rows_match_datasets_in_order(annex: list[AnnexRow], catalog: Catalog) -> None:
    assert len(catalog.datasets) == len(annex)
    for row, ds in zip(annex, catalog.datasets, strict=True):
        cat = catalog.category(ds.category_id)
        assert (cat.number, cat.name_zh) == (row.number, row.category), ds.id
        if row.subitem is not None:  # 法院判决信息 (已在互联网上公开的裁判文书) keeps its note
            assert re.split(r"\s*[（(]", row.subitem)[0] == ds.name_zh, ds.id
        assert ds.sharing_zh == row.sharing, ds.id
        assert ds.responsible_unit == row.unit, ds.id
        assert ds.completion == row.completion, ds.id


def test_category_responsible_unit_is_one_of_its_rows(
    annex: list[AnnexRow], catalog: Catalog
) -> None:
    for cat in catalog.categories:
        assert cat.responsible_unit in {r.unit for r in annex if r.number == cat.number}, cat.id


def test_every_annex_item_is_covered_by_its_dataset(
    annex: list[AnnexRow], catalog: Catalog
) -> None:
    for row, ds in zip(annex, catalog.datasets, strict=True):
        identity = dict(ds.identity).values()
        names = {f.name_zh for f in ds.fields}
        sources = {f.annex_item for f in ds.fields if f.annex_item}
        for item in row.items:
            assert item in identity or item in names or item in sources, (ds.id, item)
        # ... and nothing is invented: every field and identity entry comes from this row.
        for f in ds.fields:
            assert (f.annex_item or f.name_zh) in row.items, (ds.id, f.id)
        assert set(identity) <= set(row.items), ds.id


def test_identity_items_are_the_enterprise_name_and_uscc(annex: list[AnnexRow]) -> None:
    """The common identity columns are represented by the dataset's identity, not by fields."""
    catalog = load_catalog()
    with_uscc = [d for d in catalog.datasets if "uscc" in dict(d.identity)]
    assert len(with_uscc) == 35  # all but samr_scope, re_mortgages, agri_entities
    for row, ds in zip(annex, catalog.datasets, strict=True):
        if "统一社会信用代码" in row.items and "企业名称" in row.items:
            assert dict(ds.identity) == {"uscc": "统一社会信用代码", "enterprise_name": "企业名称"}
        assert ds.key == "uscc"
    assert dict(catalog.dataset("re_properties").identity) == {
        "enterprise_name": "权利人名称",
        "uscc": "权利人证件号",
    }
    assert (
        dict(catalog.dataset("customs_credit_grade").identity)["enterprise_name"] == "企业中文名称"
    )
    assert not {f.name_zh for f in catalog.fields} & {"企业名称", "统一社会信用代码"}


def test_splits_are_documented(catalog: Catalog) -> None:
    counts: dict[str, int] = {}
    for f in catalog.fields:
        if f.annex_item:
            counts[f.annex_item] = counts.get(f.annex_item, 0) + 1
    assert counts == SPLITS
    env = [f.id for f in catalog.fields if f.annex_item == "环保信用评价分值和等级"]
    assert env == ["env_credit_score", "env_credit_grade"]
    sci = catalog.fields_of("science_rd")
    assert [f.name_zh for f in sci[1:]] == [
        "实验室建设",
        "政府资金支持",
        "参与标准制定",
        "人才认证",
    ]
    elec = {f.name_zh for f in catalog.fields_of("util_electricity")}
    assert {"地区地方名(省/市/自治区)", "地区地方名(市/县)"} <= elec


def test_modes_levels_and_authorization_follow_the_chinese_text(
    annex: list[AnnexRow], catalog: Catalog
) -> None:
    """Mode = the first mode the 共享方式 cell names; authorization = 经企业授权 right after it."""
    words = {"物理归集": PA, "接口调用": IC, "数据核验": DV, "数据校验": DV}
    for row, ds in zip(annex, catalog.datasets, strict=True):
        first = min((row.sharing.find(w), mode) for w, mode in words.items() if w in row.sharing)
        assert ds.mode is first[1], ds.id
        head = row.sharing.split("其中")[0]
        assert ds.authorization == bool(
            re.search(r"(接口调用|数据核验|数据校验)\s*[（(]经企业授权", head)
        )
        level = "national_or_local" if "国家或地方" in row.sharing else None
        level = level or ("national" if row.sharing.startswith("国家") else "local")
        assert ds.level == level, ds.id


def test_modes_and_authorization_as_the_english_guide_states(catalog: Catalog) -> None:
    assert {d.id: (d.mode, d.authorization) for d in catalog.datasets} == GUIDE
    assert [d.id for d in catalog.datasets] == list(GUIDE)


def test_categories_and_providers(catalog: Catalog) -> None:
    assert [(c.id, c.provider) for c in catalog.categories] == CATEGORIES
    assert [c.number for c in catalog.categories] == list(range(1, 15))
    assert catalog.providers() == [p for _, p in CATEGORIES]
    for ds in catalog.datasets:
        assert ds.provider == catalog.category(ds.category_id).provider
        assert all(f.provider == ds.provider and f.dataset_id == ds.id for f in ds.fields)


def test_pinned_field_ids(catalog: Catalog) -> None:
    for ds_id, ids in PINNED_FIELDS.items():
        assert catalog.dataset(ds_id).field_ids == tuple(ids.split()), ds_id


def test_ids_are_unique_snake_case(catalog: Catalog) -> None:
    ids = [c.id for c in catalog.categories] + [d.id for d in catalog.datasets]
    ids += [f.id for f in catalog.fields] + list(catalog.keys)
    assert len(ids) == len(set(ids))
    assert all(re.fullmatch(r"[a-z][a-z0-9_]*", i) for i in ids)
    assert len(catalog.fields) == 236


# --- classification -----------------------------------------------------------------------------


def test_data_verification_fields_are_verification_only(catalog: Catalog) -> None:
    dv = [d for d in catalog.datasets if d.mode is DV]
    assert [d.id for d in dv] == ["si_pension", "re_properties", "re_mortgages"]
    for ds in dv:
        assert all(f.classification is Classification.VERIFICATION_ONLY for f in ds.fields)


def test_public_datasets_only_hold_public_fields_but_the_legal_rep_id(catalog: Catalog) -> None:
    overrides = []
    for ds in catalog.datasets:
        if ds.authorization:
            continue
        for f in ds.fields:
            if f.classification is not Classification.PUBLIC:
                overrides.append(f.id)
                assert f.authorization and f.classification is Classification.AUTHORIZED_DETAIL
                assert f.name_zh in {"法定代表人证件类型", "法定代表人证件号码"}
                assert "法定代表人证件号码和类型在对外提供时需经企业授权" in ds.sharing_zh
    assert sorted(overrides) == sorted(
        f"admin_{p}_legal_rep_id_{s}" for p in ("lic", "pen", "enf") for s in ("type", "no")
    )


def test_authorized_interface_calls_hide_exactly_the_commercial_secrets(catalog: Catalog) -> None:
    secret = {
        f.id
        for f in catalog.fields
        if f.mode is IC and f.classification is Classification.VERIFICATION_ONLY
    }
    assert secret == COMMERCIAL_SECRETS
    others = [f for f in catalog.fields if f.mode is IC and f.authorization]
    assert all(
        f.classification is Classification.AUTHORIZED_DETAIL
        for f in others
        if f.id not in COMMERCIAL_SECRETS
    )


def test_public_fields_and_flags(catalog: Catalog) -> None:
    public = catalog.public_fields()
    assert {f.dataset_id for f in public} == {d.id for d in catalog.datasets if not d.authorization}
    assert not any(f.verifiable for f in public)
    for f in catalog.fields:
        if f.model_feature:
            assert f.type in {"integer", "decimal", "boolean", "enum"} or f.standard, f.id
        if f.type is FieldType.ENUM:
            assert f.values, f.id
        if f.type is FieldType.DECIMAL:
            assert f.unit, f.id
    assert catalog.field("tax_vat_paid_last_year").verifiable
    assert catalog.field("tax_vat_paid_last_year").unit == "CNY"
    assert not catalog.field("samr_business_scope").verifiable  # free text
    assert catalog.field("samr_industry_code").model_feature


def test_tax_grade_a_list_is_public_subset(catalog: Catalog) -> None:
    ds = catalog.dataset("tax_credit_grade")
    assert ds.public_subset is not None
    assert (ds.public_subset.field, ds.public_subset.values) == ("tax_grade", ("A",))
    assert ds.public_subset.mode is PA and ds.public_subset.level == "national"
    assert catalog.field("tax_grade").values == ("A", "B", "M", "C", "D")


def test_social_insurance_bands(catalog: Catalog) -> None:
    headcount = catalog.field("si_pension_headcount_band")
    bands = catalog.bands[headcount.bands or ""]
    assert headcount.values == bands.labels == ("b1", "b2", "b3", "b4", "b5", "b6")
    assert [bands.label_for(x) for x in (0, 9, 10, 299, 300, 10**6)] == [
        "b1",
        "b1",
        "b2",
        "b5",
        "b6",
        "b6",
    ]
    assert bands.bounds("b2") == (10, 20) and bands.bounds("b6") == (300, None)
    with pytest.raises(InvalidArgument, match="b9"):
        bands.bounds("b9")


# --- look-ups -----------------------------------------------------------------------------------


def test_lookups(catalog: Catalog) -> None:
    assert catalog.provider_of("hf_last_normal_payment_date") == "housing_fund"
    assert catalog.dataset_of("si_in_arrears").id == "si_arrears"
    assert catalog.dataset("util_gas").cardinality == "one"
    assert [d.id for d in catalog.datasets_for_provider("social_insurance")] == [
        "si_pension",
        "si_arrears",
    ]
    assert {f.dataset_id for f in catalog.fields_for_provider("real_estate")} == {
        "re_properties",
        "re_mortgages",
    }
    assert catalog.enterprise_name_field("samr_basic") == "enterprise_name"
    assert load_catalog() is load_catalog()


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda c: c.field("tax_no_such_field"), "tax_no_such_field"),
        (lambda c: c.provider_of("nope_field"), "nope_field"),
        (lambda c: c.dataset_of("nope_field"), "nope_field"),
        (lambda c: c.dataset("nope_dataset"), "nope_dataset"),
        (lambda c: c.category("nope_category"), "nope_category"),
        (lambda c: c.fields_for_provider("nope_unit"), "nope_unit"),
        (lambda c: c.datasets_for_provider("nope_unit"), "nope_unit"),
        (lambda c: c.enterprise_name_field("samr_scope"), "samr_scope"),
    ],
)
def test_unknown_ids_are_invalid_arguments(catalog: Catalog, call: Any, name: str) -> None:
    with pytest.raises(InvalidArgument, match=name):
        call(catalog)


# --- strict validation --------------------------------------------------------------------------


def _field(raw: dict[str, Any], field_id: str) -> dict[str, Any]:
    return next(f for f in raw["fields"] if f["id"] == field_id)


def _dataset(raw: dict[str, Any], dataset_id: str) -> dict[str, Any]:
    return next(d for d in raw["datasets"] if d["id"] == dataset_id)


BREAKAGES = [
    # (mutation, text the error must contain)
    (lambda r: _field(r, "tax_grade").update(id="tax_grade_year"), "duplicate id 'tax_grade_year'"),
    (lambda r: _field(r, "tax_grade").update(id="util_water"), "duplicate id 'util_water'"),
    (lambda r: _field(r, "tax_grade").update(id="Tax-Grade"), "not snake_case"),
    (lambda r: _dataset(r, "tax_payments").update(mode="push"), "'push' is not one of"),
    (lambda r: _field(r, "re_area").update(classification="public"), "contradicts"),
    (
        lambda r: _field(r, "samr_legal_rep").update(classification="authorized_detail"),
        "contradicts",
    ),
    (lambda r: _field(r, "admin_lic_legal_rep_id_no").pop("authorization"), "contradicts"),
    (lambda r: _field(r, "tax_in_arrears").update(classification="secret"), "'secret' is not one"),
    (lambda r: _field(r, "tax_grade").update(colour="red"), "colour: unknown key"),
    (lambda r: _field(r, "tax_grade").pop("name_zh"), "name_zh: missing"),
    (lambda r: _field(r, "tax_grade").update(verifiable="yes"), "must be bool"),
    (lambda r: _field(r, "tax_grade").update(dataset="tax_nothing"), "unknown dataset"),
    (lambda r: _field(r, "tax_grade").pop("values"), "enum fields, and only they"),
    (lambda r: _field(r, "tax_in_arrears").update(values=["Y", "N"]), "enum fields, and only"),
    (lambda r: _field(r, "samr_legal_rep").update(verifiable=True), "nothing to verify"),
    (lambda r: _field(r, "re_area").update(unit="acre"), "'acre' is not one of"),
    (lambda r: _field(r, "samr_address").update(model_feature=True), "not a model feature"),
    (lambda r: _field(r, "si_pension_headcount_band").update(bands="si_contribution_x"), "bands"),
    (
        lambda r: r["bands"]["si_headcount"].update(lower_bounds=[0, 10, 5, 50, 100, 300]),
        "increasing",
    ),
    (lambda r: _dataset(r, "tax_credit_grade")["public_subset"].update(values=["Z"]), "values of"),
    (lambda r: _dataset(r, "samr_basic").update(category="nowhere"), "unknown category"),
    (lambda r: _dataset(r, "samr_basic").update(identity={"lei": "企业名称"}), "identity"),
    (lambda r: r["categories"][1].update(number=7), "must be 2"),
    (lambda r: r.update(schema_version=2), "schema_version"),
]


@pytest.mark.parametrize(("mutate", "message"), BREAKAGES)
def test_loader_rejects_a_broken_catalog(raw: dict[str, Any], mutate: Any, message: str) -> None:
    parse_catalog(copy.deepcopy(raw), "annex.toml")  # the untouched document is valid
    mutate(raw)
    with pytest.raises(ConfigError) as err:
        parse_catalog(raw, "annex.toml")
    assert message in str(err.value)
    assert str(err.value).startswith("annex.toml: ")


def test_loader_rejects_an_empty_dataset(raw: dict[str, Any]) -> None:
    raw["fields"] = [f for f in raw["fields"] if f["dataset"] != "si_arrears"]
    with pytest.raises(ConfigError, match="dataset has no fields"):
        parse_catalog(raw)
