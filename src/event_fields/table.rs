//! The table itself: every custody event kind and its `--set` fields, with unit and meaning.
//! Data only; adding a kind is one [`Kind`] row here (see the module above).

use super::{Field, Kind};

const fn f(proto: &'static str, unit: &'static str, about: &'static str) -> Field {
    Field { proto, unit, about }
}

/// Every event kind a client can name, in lifecycle order.
pub const KINDS: &[Kind] = &[
    Kind {
        name: "enrolled",
        about: "the patient is enrolled; starts the chain",
        fields: &[
            f("coi_ref", "", "chain-of-identity reference (pseudonym, [A-Za-z0-9-], no PHI)"),
            f("therapy", "", "therapy name"),
            f("manufacturing_site", "", "site that will manufacture"),
        ],
    },
    Kind {
        name: "collected",
        about: "apheresis collection into the bag",
        fields: &[
            f("din", "", "ISBT 128 DIN of the collection bag (13 characters, or 14 with its check character)"),
            f("product_code", "", "ISBT 128 product code, e.g. S1234000"),
            f("volume_ml", "mL", "volume collected"),
            f("collection_end_unix_nanos", "", "when collection ended"),
        ],
    },
    Kind {
        name: "packed",
        about: "packed for shipment",
        fields: &[
            f("shipper_id", "", "shipper (GRAI)"),
            f("logger_id", "", "temperature logger (GIAI)"),
            f("seal_id", "", "tamper seal"),
        ],
    },
    Kind {
        name: "shipped",
        about: "handed to a courier",
        fields: &[
            f("from_site", "", "sending site"),
            f("to_site", "", "receiving site"),
            f("courier", "", "courier"),
            f("shipper_id", "", "shipper (GRAI)"),
            f("logger_id", "", "temperature logger (GIAI)"),
            f("condition", "", "shipping condition, e.g. 2-8C, LN2"),
        ],
    },
    Kind {
        name: "received",
        about: "received at a site, with the logger's readings",
        fields: &[
            f("from_site", "", "sending site"),
            f("seal_intact", "", "tamper seal intact on arrival"),
            f("temp_min_c", "°C", "lowest temperature the logger recorded in transport"),
            f("temp_max_c", "°C", "highest temperature the logger recorded in transport"),
            f("elapsed_seconds", "s", "time out of controlled storage during transport"),
            f("shipper_id", "", "shipper (GRAI)"),
        ],
    },
    Kind {
        name: "manufacturing_step",
        about: "one manufacturing step",
        fields: &[
            f("step", "", "activation, transduction, expansion, harvest, formulation, cryopreservation"),
            f("batch_id", "", "manufacturing batch"),
            f("parameters", "", "process parameter (repeatable: param.NAME=VALUE)"),
            f("product_bag_ids", "", "final product bags this step produced (their DINs or bag ids)"),
        ],
    },
    Kind {
        name: "qc_result",
        about: "a quality-control test result",
        fields: &[
            f("test", "", "sterility, endotoxin, mycoplasma, viability, identity, potency, vcn"),
            f("method", "", "test method"),
            f("result", "", "the measured result as reported, e.g. \"no growth\", \"82 %\""),
            f("passed", "", "whether the result meets the specification"),
            f("specification", "", "the specification"),
        ],
    },
    Kind {
        name: "released",
        about: "QA release of the product",
        fields: &[
            f("exceptional", "", "released by exception (needs deviation_id)"),
            f("deviation_id", "", "deviation that justifies an exceptional release"),
        ],
    },
    Kind {
        name: "rejected",
        about: "QA rejection of the product",
        fields: &[f("reason", "", "why (or give --comment)")],
    },
    Kind {
        name: "stored",
        about: "put into storage",
        fields: &[
            f("location", "", "storage location (GIAI or free text)"),
            f("temp_c", "°C", "storage temperature"),
        ],
    },
    Kind {
        name: "lymphodepletion_started",
        about: "the first dose of the patient's lymphodepleting course (treating site)",
        fields: &[
            f("regimen", "", "regimen as prescribed, e.g. fludarabine/cyclophosphamide (no PHI)"),
            f("started_at_unix_nanos", "", "when the first dose started"),
        ],
    },
    Kind {
        name: "lymphodepletion_completed",
        about: "the last dose of the course; the infusion window counts from it",
        fields: &[f("completed_at_unix_nanos", "", "when the last dose ended")],
    },
    Kind {
        name: "dispensed",
        about: "dispensed by the pharmacy for infusion",
        fields: &[
            f("product_bag_id", "", "DIN of the product bag dispensed"),
            f("thawed_at_unix_nanos", "", "when thawing ended"),
        ],
    },
    Kind {
        name: "bedside_check",
        about: "wristband against product bag, at the bedside",
        fields: &[
            f("wristband_coi_ref", "", "CoI reference read off the patient's wristband"),
            f("product_bag_id", "", "DIN of the product bag at the bedside"),
        ],
    },
    Kind {
        name: "infused",
        about: "the product was infused",
        fields: &[
            f("product_bag_id", "", "DIN of the product bag infused"),
            f("started_at_unix_nanos", "", "infusion start"),
            f("ended_at_unix_nanos", "", "infusion end"),
        ],
    },
    Kind {
        name: "hold",
        about: "puts the chain on hold",
        fields: &[f("reason", "", "why (or give --comment)")],
    },
    Kind {
        name: "hold_released",
        about: "QA clears the open hold",
        fields: &[f("reason", "", "why it may go on (or give --comment)")],
    },
    Kind {
        name: "deviation",
        about: "records a deviation",
        fields: &[
            f("deviation_id", "", "deviation number"),
            f("description", "", "what deviated (or give --comment)"),
        ],
    },
    Kind {
        name: "destroyed",
        about: "the bag was destroyed",
        fields: &[f("reason", "", "why (or give --comment)")],
    },
    Kind {
        name: "custody_handoff",
        about: "custody passes between sites without a shipment",
        fields: &[
            f("from_site", "", "site handing over"),
            f("to_site", "", "site taking custody"),
        ],
    },
    Kind {
        name: "identity_check_failed",
        about: "a near miss for QA: an identity check at a station failed; changes nothing",
        fields: &[
            f("check", "", "the event being recorded: bedside_check or received"),
            f("reason", "", "what did not match, as the station showed it"),
            f("scanned_wristband_coi_ref", "", "CoI reference scanned off the wristband"),
            f("scanned_bag_id", "", "DIN of the bag scanned"),
            f("scanned_shipper_id", "", "GRAI of the shipper scanned"),
            f("expected_shipper_id", "", "the shipper the shipment named"),
        ],
    },
];
