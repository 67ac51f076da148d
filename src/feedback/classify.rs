//! Classification of PNS answers into verdicts (pns-protocols.md §1.6, §2.3, §3.3, §4.1).
