"""Unit: the incentive catalogue YAML contract and its checks against the arms in the data."""

import pytest

from features.errors import DataError
from serving.runtime.decision.catalog import Catalog, Incentive, dump_catalog, load_catalog

YAML = """\
control: "No E-Mail"
outcome_value: 30.0
incentives:
  - name: "Mens E-Mail"
    cost: 0.10
    redemption_cost: 0.5
  - name: "Womens E-Mail"
    cost: 0.10
"""


@pytest.fixture
def catalog_file(tmp_path):
    path = tmp_path / "incentives.yaml"
    path.write_text(YAML)
    return path


def test_yaml_loads_into_arms_in_file_order_with_default_redemption_cost(catalog_file):
    catalog = load_catalog(catalog_file)
    assert catalog.control == "No E-Mail"
    assert catalog.outcome_value == 30.0
    assert catalog.arms == ["Mens E-Mail", "Womens E-Mail"]
    assert catalog.costs.tolist() == [0.10, 0.10]
    assert catalog.redemption_costs.tolist() == [0.5, 0.0]


def test_dumped_catalog_loads_back_equal(catalog_file, tmp_path):
    catalog = load_catalog(catalog_file)
    assert load_catalog(dump_catalog(catalog, tmp_path / "again.yaml")) == catalog


def test_catalogue_arm_missing_from_data_is_named():
    catalog = Catalog("ctrl", (Incentive("a", 1.0), Incentive("b", 1.0)), 10.0)
    with pytest.raises(DataError, match="catalogue arm\\(s\\) not in the data: 'b'"):
        catalog.check_arms(["ctrl", "a"])


def test_data_arm_missing_from_catalogue_is_named():
    catalog = Catalog("ctrl", (Incentive("a", 1.0),), 10.0)
    with pytest.raises(DataError, match="arm\\(s\\) in the data missing from the catalogue: 'z'"):
        catalog.check_arms(["ctrl", "a", "z"])


def test_missing_control_in_data_is_an_error():
    catalog = Catalog("ctrl", (Incentive("a", 1.0),), 10.0)
    with pytest.raises(DataError, match="'ctrl'"):
        catalog.check_arms(["a"])


@pytest.mark.parametrize("text,message", [
    ("control: c\nincentives: []\n", "non-empty list"),
    ("control: c\nincentives:\n  - name: a\n", "needs a 'cost'"),
    ("control: c\nincentives:\n  - name: a\n    cost: -1\n", "negative cost"),
    ("control: c\nincentives:\n  - name: a\n    cost: x\n", "finite number"),
    ("control: c\nincentives:\n  - {name: a, cost: 1}\n  - {name: a, cost: 2}\n", "duplicate incentive"),
    ("control: a\nincentives:\n  - {name: a, cost: 1}\n", "also listed as an incentive"),
    ("incentives:\n  - {name: a, cost: 1}\n", "'control'"),
    ("control: [unclosed\n", "not valid YAML"),
])
def test_malformed_catalogue_gives_one_clear_error(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(DataError, match=message):
        load_catalog(path)


def test_override_catalogue_is_reordered_to_the_model_arm_order():
    override = Catalog("c", (Incentive("b", 2.0), Incentive("a", 1.0)), 5.0)
    assert override.for_model(["a", "b"], "c").costs.tolist() == [1.0, 2.0]


def test_override_catalogue_with_other_arms_is_refused():
    override = Catalog("c", (Incentive("a", 1.0), Incentive("x", 1.0)), 5.0)
    with pytest.raises(DataError, match="not in the model: 'x'"):
        override.for_model(["a", "b"], "c")


def test_personalised_incentives_and_categories_are_read_and_dumped_back(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("control: none\ncategories: [toys, home]\nincentives:\n"
                    "  - {name: email, cost: 0.05}\n"
                    "  - {name: category_coupon, cost: 0.10, redemption_cost: 5.0, personalised: true}\n")
    catalog = load_catalog(path)
    assert catalog.personalised == ["category_coupon"] and catalog.categories == ("toys", "home")
    assert load_catalog(dump_catalog(catalog, tmp_path / "back.yaml")) == catalog
    assert catalog.for_model(["category_coupon", "email"], "none").categories == ("toys", "home")


@pytest.mark.parametrize("text,message", [
    ("control: c\nincentives:\n  - {name: a, cost: 1, personalised: 'yes'}\n", "personalised must be true or false"),
    ("control: c\ncategories: []\nincentives:\n  - {name: a, cost: 1}\n", "'categories' must be a non-empty list"),
    ("control: c\ncategories: [toys, toys]\nincentives:\n  - {name: a, cost: 1}\n", "duplicate categories"),
])
def test_malformed_personalisation_is_named(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(DataError, match=message):
        load_catalog(path)
