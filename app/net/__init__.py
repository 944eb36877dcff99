"""DICOM networking with the central PACS: nodes, associations, query/retrieve, storage."""
