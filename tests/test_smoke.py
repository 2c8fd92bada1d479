from recovery.models import QualificationRun


def test_database_is_usable(db):
    assert QualificationRun.objects.count() == 0
