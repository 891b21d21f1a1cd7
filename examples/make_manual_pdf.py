"""Build examples/manuals/aquapure-w3-manual.pdf from the manual text below (needs reportlab).

Run: python examples/make_manual_pdf.py
"""

from pathlib import Path

from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import getSampleStyleSheet
from reportlab.platypus import PageBreak, Paragraph, SimpleDocTemplate, Spacer

OUTPUT = Path(__file__).parent / "manuals" / "aquapure-w3-manual.pdf"

# One list per printed page: (style, text) pairs.
PAGES = [
    [
        ("Title", "AquaPure W3 Under-Sink Water Purifier"),
        ("Heading2", "User Manual, revision 2.1"),
        ("BodyText", "Thank you for choosing the AquaPure W3. This manual explains how to install, "
                     "operate and maintain the purifier. Keep it near the unit for later reference."),
        ("Heading2", "Safety"),
        ("BodyText", "Connect the purifier to the cold water line only. Water above 38 degrees Celsius "
                     "damages the membrane. Do not install the unit where it may freeze."),
        ("BodyText", "Unplug the power adapter before opening the front cover."),
    ],
    [
        ("Heading1", "Installation"),
        ("BodyText", "The AquaPure W3 needs a cold water supply with a pressure between 1.0 and 4.0 bar. "
                     "Below 1.0 bar the booster pump cannot reach the rated output."),
        ("BodyText", "Mount the unit upright in the cabinet under the sink, leaving at least 10 cm of free "
                     "space above it so that the filter cartridge can be pulled out."),
        ("BodyText", "After installation, flush the system for 15 minutes before drinking the water. "
                     "The first litres may look cloudy because of trapped air; this is normal."),
        ("Heading2", "Rated output"),
        ("BodyText", "At 25 degrees Celsius and 2.5 bar, the purifier delivers 1.2 litres of clean water "
                     "per minute and rejects about one litre for every two litres it produces."),
    ],
    [
        ("Heading1", "Maintenance"),
        ("BodyText", "The composite filter cartridge lasts 12 months or 3,000 litres, whichever comes first. "
                     "The ring around the tap turns red when 30 days of filter life remain."),
        ("BodyText", "To replace the cartridge, close the inlet valve, turn the old cartridge a quarter turn "
                     "counter-clockwise and pull it out. Insert the new cartridge and turn it clockwise "
                     "until it clicks. Then hold the RESET button for 5 seconds to restart the filter counter."),
        ("BodyText", "Clean the outside of the unit with a damp cloth. Do not use solvents or bleach."),
    ],
    [
        ("Heading1", "Troubleshooting"),
        ("BodyText", "Error code E1 means the inlet pressure is too low: check that the inlet valve is fully "
                     "open. Error code E2 means a leak was detected: close the inlet valve at once and call "
                     "service. Error code E3 means the filter is expired and must be replaced."),
        ("BodyText", "If the water tastes of plastic during the first week, flush the system for another "
                     "10 minutes."),
        ("Heading2", "Warranty"),
        ("BodyText", "The AquaPure W3 is covered by a warranty of 24 months from the date of purchase. "
                     "Filter cartridges are consumables and are not covered."),
    ],
]


def build(output: Path = OUTPUT) -> Path:
    styles = getSampleStyleSheet()
    story = []
    for number, page in enumerate(PAGES):
        if number:
            story.append(PageBreak())
        for style, text in page:
            story.append(Paragraph(text, styles[style]))
            story.append(Spacer(1, 6))
    doc = SimpleDocTemplate(str(output), pagesize=A4, title="AquaPure W3 User Manual",
                            author="ragglm examples", invariant=1)
    doc.build(story)
    return output


if __name__ == "__main__":
    print(build())
