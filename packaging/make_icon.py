"""Draw the application icon (resources/icons/clp2p.png, 256 px): two image tiles, a source
and its edit, joined by an arrow. Run: python packaging/make_icon.py"""

from pathlib import Path

from PIL import Image, ImageDraw

SIZE = 256


def draw() -> Image.Image:
    img = Image.new("RGBA", (SIZE, SIZE), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    d.rounded_rectangle((8, 8, SIZE - 8, SIZE - 8), radius=48, fill=(31, 33, 37, 255))
    # source tile: a red circle; target tile: a blue circle in the same place
    for x0, colour in ((28, (220, 38, 38)), (140, (37, 99, 235))):
        d.rounded_rectangle((x0, 72, x0 + 88, 160), radius=12, fill=(245, 245, 245, 255))
        d.ellipse((x0 + 20, 92, x0 + 68, 140), fill=colour)
    d.line((92, 196, 142, 196), fill=(147, 51, 234), width=10)
    d.polygon([(140, 182), (166, 196), (140, 210)], fill=(147, 51, 234))
    return img


if __name__ == "__main__":
    out = Path(__file__).resolve().parent.parent / "resources" / "icons" / "clp2p.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    draw().save(out)
    print(f"wrote {out}")
