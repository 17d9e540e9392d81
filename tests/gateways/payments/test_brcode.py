from decimal import Decimal

import pytest

from gateways.payments.brcode import BRCodeError, crc16_ccitt_false, parse, parse_fields, static_pix

MANUAL_EXAMPLE = (
    "00020126580014br.gov.bcb.pix0136123e4567-e12b-12d1-a456-4266554400005204000053039865802BR"
    "5913Fulano de Tal6008BRASILIA62070503***6304"
)


def test_crc_check_vectors() -> None:
    assert f"{crc16_ccitt_false(b'123456789'):04X}" == "29B1"
    assert f"{crc16_ccitt_false(MANUAL_EXAMPLE.encode()):04X}" == "1D3D"
    assert parse(MANUAL_EXAMPLE + "1D3D")["59"] == "Fulano de Tal"


def test_static_code_has_every_field_of_the_contract() -> None:
    code = static_pix(pix_key="pix@example.com", amount=Decimal("19.9"), merchant_name="GRIMBOTS DEMO",
                      merchant_city="SÃO PAULO", txid="ABC123def456GHI789jkl0MNO")  # fmt: skip
    fields = parse(code)
    assert fields["00"] == "01"
    assert parse_fields(fields["26"]) == {"00": "br.gov.bcb.pix", "01": "pix@example.com"}
    assert (fields["52"], fields["53"], fields["54"], fields["58"]) == ("0000", "986", "19.90", "BR")
    assert (fields["59"], fields["60"]) == ("GRIMBOTS DEMO", "SAO PAULO")
    assert parse_fields(fields["62"]) == {"05": "ABC123def456GHI789jkl0MNO"}
    assert code[-8:-4] == "6304" and code[-4:] == code[-4:].upper()


def test_names_are_cut_to_their_limits() -> None:
    code = static_pix(pix_key="k", amount=Decimal("1"), merchant_name="A" * 40, merchant_city="B" * 30, txid="X1")
    fields = parse(code)
    assert len(fields["59"]) == 25 and len(fields["60"]) == 15


@pytest.mark.parametrize("txid", ["", "has space", "x" * 26, "***"])
def test_bad_txid_is_refused(txid: str) -> None:
    with pytest.raises(BRCodeError):
        static_pix(pix_key="k", amount=Decimal("1"), merchant_name="A", merchant_city="B", txid=txid)


def test_tampered_code_fails_the_crc() -> None:
    code = static_pix(pix_key="k", amount=Decimal("19.90"), merchant_name="A", merchant_city="B", txid="T1")
    with pytest.raises(BRCodeError):
        parse(code.replace("19.90", "10.90"))
