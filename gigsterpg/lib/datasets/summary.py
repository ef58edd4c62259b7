"""What ``load-csv`` and ``transform`` print: one block per file, the columns with their types, the bad lines."""
from gigsterpg.lib.datasets.load import LoadReport
from gigsterpg.lib.datasets.transform import TransformReport
from gigsterpg.text import number, plural

BAD_SHOWN = 5


def _columns(columns) -> str:
    return ", ".join(f"{column['name']} {column['kind']}" for column in columns)


def format_load(report: LoadReport) -> str:
    lines = []
    for load in report.files:
        verb = "merged into" if load.mode == "merge" else "loaded into"
        lines.append(f"{load.file}: {plural(load.rows, 'row')} {verb} {load.table} (dataset {load.dataset!r},"
                     f" {plural(load.table_rows, 'row')} now), {plural(load.bad_lines, 'bad line')},"
                     f" {load.seconds:.1f} s"
                     f" ({load.rate:,.0f} rows/s, parsed by {load.parser})")
        lines.append(f"  columns: {_columns(load.columns)}")
        for bad in load.rejects[:BAD_SHOWN]:
            lines.append(f"  bad line {bad.line}" + (f" column {bad.column}" if bad.column else "") + f": {bad.reason}")
        if load.bad_lines > BAD_SHOWN:
            lines.append(f"  ... {number(load.bad_lines - BAD_SHOWN)} more bad lines: SELECT * FROM csv_rejects"
                         f" WHERE dataset = '{load.dataset}' ORDER BY line")
    if len(report.files) > 1:
        lines.append(f"{plural(len(report.files), 'file')}: {plural(report.rows, 'row')},"
                     f" {plural(report.bad_lines, 'bad line')}.")
    return "\n".join(lines)


def format_transform(report: TransformReport) -> str:
    return (f"Dataset {report.dataset!r} ({report.table}) replaced: {plural(report.rows, 'row')} keyed by {report.key},"
            f" {report.seconds:.1f} s\n  columns: {_columns(report.columns)}")
