"""Which country a number belongs to, as the ISO 3166-1 alpha-3 code list results report it.

Bandwidth fills a list item's ``callingNumberCountryA3``/``calledNumberCountryA3`` from the
number's country calling code (ITU-T E.164): ``+44...`` is ``GBR``. Calling codes are prefix-free,
so the first 1-3 digits name one code. A code shared by several countries maps to its main one,
except where the next digits decide cheaply: the North American Numbering Plan (+1), whose area
code names the country (US unless listed below), and +7, where 6xx and 7xx are Kazakhstan.
Non-geographic codes (+800, +882...) have no country: None, as for an alphanumeric sender.

The table is ITU's list of assigned codes; no dependency is needed for ~200 entries.
"""

from __future__ import annotations

from typing import Final

__all__ = ["country_a3", "is_toll_free"]

#: ``code=A3`` pairs: every assigned country calling code but +1 and +7 (decided in code).
_CALLING_CODES = """
20=EGY 27=ZAF 30=GRC 31=NLD 32=BEL 33=FRA 34=ESP 36=HUN 39=ITA 40=ROU
41=CHE 43=AUT 44=GBR 45=DNK 46=SWE 47=NOR 48=POL 49=DEU 51=PER 52=MEX
53=CUB 54=ARG 55=BRA 56=CHL 57=COL 58=VEN 60=MYS 61=AUS 62=IDN 63=PHL
64=NZL 65=SGP 66=THA 81=JPN 82=KOR 84=VNM 86=CHN 90=TUR 91=IND 92=PAK
93=AFG 94=LKA 95=MMR 98=IRN 211=SSD 212=MAR 213=DZA 216=TUN 218=LBY 220=GMB
221=SEN 222=MRT 223=MLI 224=GIN 225=CIV 226=BFA 227=NER 228=TGO 229=BEN 230=MUS
231=LBR 232=SLE 233=GHA 234=NGA 235=TCD 236=CAF 237=CMR 238=CPV 239=STP 240=GNQ
241=GAB 242=COG 243=COD 244=AGO 245=GNB 246=IOT 248=SYC 249=SDN 250=RWA 251=ETH
252=SOM 253=DJI 254=KEN 255=TZA 256=UGA 257=BDI 258=MOZ 260=ZMB 261=MDG 262=REU
247=SHN 263=ZWE 264=NAM 265=MWI 266=LSO 267=BWA 268=SWZ 269=COM 290=SHN 291=ERI 297=ABW
298=FRO 299=GRL 350=GIB 351=PRT 352=LUX 353=IRL 354=ISL 355=ALB 356=MLT 357=CYP
358=FIN 359=BGR 370=LTU 371=LVA 372=EST 373=MDA 374=ARM 375=BLR 376=AND 377=MCO
378=SMR 380=UKR 381=SRB 382=MNE 385=HRV 386=SVN 387=BIH 389=MKD 420=CZE 421=SVK
423=LIE 500=FLK 501=BLZ 502=GTM 503=SLV 504=HND 505=NIC 506=CRI 507=PAN 508=SPM
509=HTI 590=GLP 591=BOL 592=GUY 593=ECU 594=GUF 595=PRY 596=MTQ 597=SUR 598=URY
599=CUW 670=TLS 672=NFK 673=BRN 674=NRU 675=PNG 676=TON 677=SLB 678=VUT 679=FJI
680=PLW 681=WLF 682=COK 683=NIU 685=WSM 686=KIR 687=NCL 688=TUV 689=PYF 690=TKL
691=FSM 692=MHL 850=PRK 852=HKG 853=MAC 855=KHM 856=LAO 880=BGD 886=TWN 960=MDV
961=LBN 962=JOR 963=SYR 964=IRQ 965=KWT 966=SAU 967=YEM 968=OMN 970=PSE 971=ARE
972=ISR 973=BHR 974=QAT 975=BTN 976=MNG 977=NPL 992=TJK 993=TKM 994=AZE 995=GEO
996=KGZ 998=UZB
"""
#: ``A3: area codes``: the NANP area codes (+1) of countries other than the USA.
_NANP = """
CAN: 204 226 236 249 250 257 263 273 289 306 343 354 365 367 368 382 403 416 418 428 431 437 438
     450 468 474 506 514 519 548 579 581 584 587 600 604 613 622 633 639 647 672 683 705 709 742
     753 778 780 782 807 819 825 867 873 879 902 905 942
BHS: 242
BRB: 246
AIA: 264
ATG: 268
VGB: 284
VIR: 340
CYM: 345
BMU: 441
GRD: 473
TCA: 649
JAM: 658 876
MSR: 664
MNP: 670
GUM: 671
ASM: 684
SXM: 721
LCA: 758
DMA: 767
VCT: 784
PRI: 787 939
DOM: 809 829 849
TTO: 868
KNA: 869
"""


def _parse_calling_codes(table: str) -> dict[str, str]:
    return dict(pair.split("=") for pair in table.split())


def _parse_nanp(table: str) -> dict[str, str]:
    areas: dict[str, str] = {}
    country = ""
    for word in table.split():
        if word.endswith(":"):
            country = word[:-1]
        else:
            areas[word] = country
    return areas


CALLING_CODES: Final = _parse_calling_codes(_CALLING_CODES)
NANP_AREA_CODES: Final = _parse_nanp(_NANP)
#: NANP toll-free area codes (Bandwidth's TOLL_FREE product).
TOLL_FREE_AREA_CODES: Final = frozenset({"800", "833", "844", "855", "866", "877", "888"})


def country_a3(number: str) -> str | None:
    """The alpha-3 country of an E.164 number (``"+447700900123"`` -> ``"GBR"``), else None.

    >>> country_a3("+15553332222"), country_a3("+16135550100"), country_a3("ACME")
    ('USA', 'CAN', None)
    """
    if number[:1] != "+":
        return None
    digits = number[1:]
    first = digits[:1]
    if first == "1":
        return NANP_AREA_CODES.get(digits[1:4], "USA")
    if first == "7":
        return "KAZ" if digits[1:2] in ("6", "7") else "RUS"
    return CALLING_CODES.get(digits[:2]) or CALLING_CODES.get(digits[:3])


def is_toll_free(number: str) -> bool:
    """Whether ``number`` is a NANP toll-free number (+1 800, 833, 844, 855, 866, 877, 888)."""
    return number[:2] == "+1" and number[2:5] in TOLL_FREE_AREA_CODES
