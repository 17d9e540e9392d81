from db.database import make_database


def test_postgresql_url_keeps_its_query_parameters_and_decodes_credentials() -> None:
    database = make_database("postgresql://app:p%40ss%2Fw@db.example:6543/grim?sslmode=require&application_name=gb")
    params = database.connect_params  # type: ignore[attr-defined]
    assert database.database == "grim"
    assert params["sslmode"] == "require" and params["application_name"] == "gb"
    assert (params["host"], params["port"], params["user"], params["password"]) == ("db.example", 6543, "app", "p@ss/w")
    assert params["connect_timeout"] == 5


def test_postgresql_url_can_set_the_pool_and_the_connect_timeout() -> None:
    database = make_database("postgres://u@h/d?max_connections=8&connect_timeout=2")
    assert database._max_connections == 8  # type: ignore[attr-defined]
    assert database.connect_params["connect_timeout"] == 2  # type: ignore[attr-defined]
    assert "max_connections" not in database.connect_params  # type: ignore[attr-defined]
