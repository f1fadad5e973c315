"""Word lists and region text for plausible synthetic names, addresses and authorities.

Everything here is fixed data; randomness lives in the callers, which draw indices into
these arrays with the population's generator (so names are deterministic for a seed).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from veil import refdata

Strs = npt.NDArray[np.str_]

SURNAMES = np.array(
    list(
        "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶"
        "程苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾"
        "毛郝龚邵万钱严覃武戴莫孔向汤"
    )
)
GIVEN = np.array(
    list(
        "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超霞平刚桂英华玉兰红梅鹏飞斌波宇浩凯健俊帆帅旭宁"
        "龙林欣瑶琳晨璐婷雪琪志国海建文晓东春秋云峰辉亮成德永福庆"
    )
)
ZIHAO = np.array(
    list(
        "鑫华盛达恒瑞泰隆宏昌源通博信诚德兴旺丰润汇鼎金天海东方新明光辉远航宇星晨阳景中安康"
        "健美佳嘉和合正同永久益利福顺祥龙凤鹏骏腾飞卓越创智慧峰川林森禾田绿青蓝紫北南西云泽江"
        "岳石玉宝晶磊振邦豪杰俊英锦绣诺亿万邦聚誉"
    )
)
ROADS = np.array(
    [
        "人民路",
        "建设路",
        "解放路",
        "中山路",
        "和平路",
        "新华路",
        "胜利路",
        "文化路",
        "长江路",
        "黄河路",
        "工业路",
        "光明路",
        "朝阳路",
        "友谊路",
        "学府路",
        "南京路",
        "北京路",
        "青年路",
        "迎宾路",
        "幸福路",
        "新兴大街",
        "建国大街",
        "开发区大道",
        "科技园路",
        "创业大道",
    ]
)
PROVINCE_ABBR = {
    "11": "京", "12": "津", "13": "冀", "14": "晋", "15": "蒙", "21": "辽", "22": "吉",
    "23": "黑", "31": "沪", "32": "苏", "33": "浙", "34": "皖", "35": "闽", "36": "赣",
    "37": "鲁", "41": "豫", "42": "鄂", "43": "湘", "44": "粤", "45": "桂", "46": "琼",
    "50": "渝", "51": "川", "52": "黔", "53": "云", "54": "藏", "61": "陕", "62": "甘",
    "63": "青", "64": "宁", "65": "新",
}  # fmt: skip

COMPANY_WORDS: dict[str, list[str]] = {
    "A": ["农业发展", "生态农业", "养殖", "种植", "农牧"],
    "B": ["矿业", "矿产品"],
    "C": ["机械制造", "电子科技", "食品", "塑料制品", "纺织", "建材", "精密机械", "新材料",
          "化工", "包装制品", "五金制品", "服装"],
    "D": ["能源", "热力", "供水"],
    "E": ["建筑工程", "建设", "装饰工程", "市政工程", "安装工程"],
    "F": ["商贸", "贸易", "商业", "物资", "百货", "医药", "农资", "电器"],
    "G": ["物流", "运输", "供应链管理", "货运"],
    "H": ["餐饮管理", "酒店管理", "餐饮"],
    "I": ["信息技术", "网络科技", "软件", "数据科技", "智能科技"],
    "J": ["投资管理", "融资担保"],
    "K": ["房地产开发", "置业", "物业服务"],
    "L": ["企业管理咨询", "商务服务", "人力资源", "广告", "物业管理", "租赁"],
    "M": ["科技", "技术服务", "检测技术", "环保科技", "工程设计"],
    "N": ["环境工程", "园林绿化"],
    "O": ["家政服务", "汽车维修", "美容美发"],
    "P": ["教育科技", "培训"],
    "Q": ["医疗管理", "健康管理"],
    "R": ["文化传媒", "体育发展", "文化传播"],
    "S": ["社会服务"],
    "T": ["国际交流服务"],
}  # fmt: skip
SHOP_WORDS: dict[str, list[str]] = {
    "F": ["便利店", "商行", "超市", "五金店", "日杂店", "水果店", "建材经销部"],
    "H": ["饭店", "小吃部", "面馆", "烧烤店", "快餐店"],
    "O": ["理发店", "汽车修理部", "洗衣店", "家政服务部"],
    "A": ["家庭农场", "养殖场", "种植园"],
}
SHOP_DEFAULT = ["经销部", "工作室", "门市部"]
AGRI_PRODUCTS = np.array(
    ["水稻", "玉米", "大豆", "蔬菜", "果蔬", "食用菌", "中药材", "茶叶", "花卉", "马铃薯"]
)
LIVESTOCK = np.array(["生猪", "肉牛", "奶牛", "家禽", "肉羊", "水产"])
PUBLIC_UNITS = np.array(
    [
        "疾病预防控制中心",
        "人民医院",
        "图书馆",
        "综合检验检测中心",
        "农业技术推广中心",
        "社会福利院",
        "文化馆",
        "中心小学",
        "第一中学",
        "第二中学",
        "职业技术学校",
        "档案馆",
    ]
)
NONPROFIT_UNITS = np.array(
    ["培训学校", "养老服务中心", "康复中心", "幼儿园", "社会工作服务中心", "职业技能培训学校"]
)

SCOPE_PHRASES: dict[str, str] = {
    "A": "谷物种植；蔬菜种植；牲畜饲养；农产品的生产、销售、加工、运输、贮藏及其他相关服务",
    "B": "矿产资源开采；矿产品销售；选矿",
    "C": "通用设备制造（不含特种设备制造）；机械零件、零部件加工；金属制品销售；货物进出口",
    "D": "热力生产和供应；供电业务；发电业务、输电业务、供（配）电业务",
    "E": "建设工程施工；住宅室内装饰装修；市政设施管理；建筑材料销售",
    "F": "日用百货销售；五金产品批发；家用电器销售；食品销售（仅销售预包装食品）",
    "G": "道路货物运输（不含危险货物）；普通货物仓储服务；国内货物运输代理",
    "H": "餐饮服务；食品销售；住宿服务",
    "I": "软件开发；信息系统集成服务；信息技术咨询服务；数据处理和存储支持服务",
    "J": "以自有资金从事投资活动；融资咨询服务",
    "K": "房地产开发经营；物业管理；住房租赁",
    "L": "企业管理咨询；市场营销策划；广告设计、代理；人力资源服务",
    "M": "技术服务、技术开发、技术咨询、技术交流、技术转让、技术推广；检验检测服务",
    "N": "园林绿化工程施工；环境保护监测；水污染治理",
    "O": "家政服务；机动车修理和维护；洗染服务；理发及美容服务",
    "P": "教育咨询服务（不含涉许可审批的教育培训活动）；业务培训",
    "Q": "健康咨询服务（不含诊疗服务）；医疗服务",
    "R": "组织文化艺术交流活动；体育赛事策划；广播电视节目制作经营",
    "S": "社会团体服务；组织开展行业交流活动",
    "T": "国际交流合作服务",
}


@dataclass(frozen=True)
class RegionText:
    """Text derived from the region table, aligned with ``codes`` (all non-province codes)."""

    codes: Strs
    province_code: Strs
    province: Strs
    city: Strs  # prefecture-level name ("" inside municipalities)
    county: Strs  # county-level name ("" for prefecture-level codes)
    place: Strs  # short place name used in enterprise names, e.g. 鹤岗
    full: Strs  # province + city + county, e.g. 黑龙江省鹤岗市向阳区
    local: Strs  # city + county, or municipality + district, e.g. 鹤岗市向阳区
    market_authority: Strs  # 鹤岗市向阳区市场监督管理局
    court: Strs  # 鹤岗市向阳区人民法院 / 鹤岗市中级人民法院
    province_weight: npt.NDArray[np.float64]


def _short(name: str) -> str:
    for suffix in ("自治州", "地区", "盟"):
        if name.endswith(suffix):
            return name[:2]
    return name.removesuffix("市")


@functools.cache
def region_text() -> RegionText:
    """Region strings for every prefecture- and county-level code of the reference table."""
    rows = [r for r in refdata.regions() if r.level != "province"]
    prov = {r.code: r for r in refdata.provinces()}
    cols: dict[str, list[str]] = {
        k: []
        for k in [
            "codes",
            "province_code",
            "province",
            "city",
            "county",
            "place",
            "full",
            "local",
            "authority",
            "court",
        ]
    }
    weights: list[float] = []
    for r in rows:
        p = prov[r.code[:2] + "0000"]
        municipality = r.parent == p.code and r.level == "county"
        if r.level == "prefecture":
            city, county = r.name, ""
        elif municipality:
            city, county = "", r.name
        else:
            city, county = refdata.region(r.code[:4] + "00").name, r.name
        head = p.name if municipality else city
        local = head + county
        cols["codes"].append(r.code)
        cols["province_code"].append(p.code)
        cols["province"].append(p.name)
        cols["city"].append(city)
        cols["county"].append(county)
        cols["place"].append(_short(head))
        cols["full"].append(p.name + city + county)
        cols["local"].append(local)
        cols["authority"].append(local + "市场监督管理局")
        cols["court"].append(local + "人民法院" if county else city + "中级人民法院")
        weights.append(p.weight)
    # Spread each province's weight evenly over its codes.
    w = np.array(weights)
    pc = np.array(cols["province_code"])
    for code in set(cols["province_code"]):
        sel = pc == code
        w[sel] = w[sel] / sel.sum()
    return RegionText(
        codes=np.array(cols["codes"]),
        province_code=pc,
        province=np.array(cols["province"]),
        city=np.array(cols["city"]),
        county=np.array(cols["county"]),
        place=np.array(cols["place"]),
        full=np.array(cols["full"]),
        local=np.array(cols["local"]),
        market_authority=np.array(cols["authority"]),
        court=np.array(cols["court"]),
        province_weight=w / w.sum(),
    )


def pick(rng: np.random.Generator, words: npt.NDArray[np.str_] | list[str], n: int) -> Strs:
    """``n`` uniform draws from ``words``."""
    arr = np.asarray(words)
    return arr[rng.integers(0, len(arr), n)]


def person_names(rng: np.random.Generator, n: int) -> Strs:
    """Chinese personal names: a surname and one or two given-name characters."""
    first = pick(rng, GIVEN, n)
    second = np.where(rng.random(n) < 0.6, pick(rng, GIVEN, n), "")
    return np.char.add(np.char.add(pick(rng, SURNAMES, n), first), second)


def join(*parts: Strs | str) -> Strs:
    """Element-wise concatenation of string arrays (and scalars)."""
    out = np.asarray(parts[0])
    for p in parts[1:]:
        out = np.char.add(out, p)
    return out
