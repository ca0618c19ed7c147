"""A generated product catalog in the Rakuten challenge layout, small enough to train on a CPU.

The demo exists to exercise the whole method (text models, image model, fusion, stacking) offline, so
its data is built for one property: neither modality alone determines the class.

- Every class has a *text family* (the words its titles and descriptions use) and an *image family*
  (the shape and colour drawn on its photos).
- Text-ambiguous groups (books 10 / 2705 / 2403, games 40 / 2462 / 2905, toys 1280 / 1281 / 1302)
  share a text family but have distinct images.
- Image-ambiguous groups (paper 2280 / 2522 / 1160, furniture 1560 / 2582 / 1920,
  small figures 1140 / 1180 / 1300) share an image family but have distinct words.
- The other nine classes are distinct in both, and (text family, image family) is unique per class,
  so text + image together determine the class.
- Noise keeps every modality imperfect: ~10% of products are worded like a neighbouring family and
  ~5% show the photo of another family.

Deterministic by seed: the same arguments give byte-identical CSVs and JPEGs.
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from mmpc.labels import RAKUTEN_CODES

__all__ = ["DEMO_FAMILIES", "IMAGE_FAMILIES", "TEXT_FAMILIES", "DemoFamily", "write_demo_catalog"]

# Bump when the generator's output changes, so an old folder is not mistaken for a current one.
_GENERATOR_VERSION = 1
_MANIFEST = "demo_catalog.json"

TEXT_NOISE = 0.10  # share of products worded like a neighbouring text family
IMAGE_NOISE = 0.05  # share of products showing another image family's photo
MISSING_DESCRIPTION = 0.30


class DemoFamily(NamedTuple):
    text: str
    image: str


# code -> (text family, image family). (text, image) is unique per code; see the module docstring.
DEMO_FAMILIES: dict[int, DemoFamily] = {
    10: DemoFamily("livre", "livre_ancien"),
    2705: DemoFamily("livre", "livre_neuf"),
    2403: DemoFamily("livre", "lot_livres"),
    40: DemoFamily("jeu_video", "jeu_boite"),
    2462: DemoFamily("jeu_video", "jeu_pack"),
    2905: DemoFamily("jeu_video", "jeu_pc"),
    1280: DemoFamily("jouet", "jouet_enfant"),
    1281: DemoFamily("jouet", "jeu_societe"),
    1302: DemoFamily("jouet", "jeu_plein_air"),
    2280: DemoFamily("magazine", "papier"),
    2522: DemoFamily("papeterie", "papier"),
    1160: DemoFamily("carte", "papier"),
    1560: DemoFamily("meuble", "meuble"),
    2582: DemoFamily("mobilier_jardin", "meuble"),
    1920: DemoFamily("linge", "meuble"),
    1140: DemoFamily("figurine", "figurine"),
    1180: DemoFamily("wargame", "figurine"),
    1300: DemoFamily("modelisme", "figurine"),
    50: DemoFamily("accessoire_gaming", "accessoire"),
    60: DemoFamily("console", "console"),
    1301: DemoFamily("bebe", "bebe"),
    1320: DemoFamily("puericulture", "puericulture"),
    1940: DemoFamily("epicerie", "epicerie"),
    2060: DemoFamily("deco", "deco"),
    2220: DemoFamily("animalerie", "animalerie"),
    2583: DemoFamily("piscine", "piscine"),
    2585: DemoFamily("outil_jardin", "outil_jardin"),
}

# Class sizes: sqrt of the real challenge counts keeps the real order but compresses the 13x spread
# to ~3.7x, so the rarest class still has enough products to learn from in a small catalog.
_REAL_COUNTS: dict[int, int] = {
    10: 3116,
    40: 2508,
    50: 1681,
    60: 832,
    1140: 2671,
    1160: 3953,
    1180: 764,
    1280: 4870,
    1281: 2070,
    1300: 5045,
    1301: 807,
    1302: 2491,
    1320: 3241,
    1560: 5073,
    1920: 4303,
    1940: 803,
    2060: 4993,
    2220: 824,
    2280: 4760,
    2403: 4774,
    2462: 1421,
    2522: 4989,
    2582: 2589,
    2583: 10209,
    2585: 2496,
    2705: 2761,
    2905: 872,
}

# Words per text family: nouns | adjectives | brands | specs | description sentences ("|"-separated).
# Placeholders in braces are filled per product (see _fill); few hundred words per family at most so a
# tiny tokenizer and model can learn them.
_TEXT: dict[str, tuple[str, str, str, str, str]] = {
    "livre": (
        "Livre|Roman|Tome|Bande Dessinée|Manga|Guide|Recueil|Essai|Encyclopédie|Album|Dictionnaire|"
        "Biographie|Atlas|Méthode|Polar",
        "Illustré|Broché|Relié|Poche|Grand Format|Ancien|Inédit|Complet|Annoté|Jeunesse|Historique|Classique",
        "Gallimard|Hachette|Flammarion|Folio|Le Livre De Poche|Dargaud|Casterman|Glénat|Larousse|"
        "Albin Michel|Victor Hugo|Jules Verne|Alexandre Dumas|Émile Zola",
        "Tome {n}|Édition {y}|{p} Pages|Volume {n}|Collection {brand}",
        "Livre en bon état général, quelques marques d'usage sur la couverture.|"
        "Un {noun} {adj} publié chez {brand}, {p} pages.|"
        "Roman captivant, idéal pour les amateurs de lecture.|"
        "Couverture souple, pages intérieures propres et sans annotations.|"
        "Lot de livres envoyé sous enveloppe bulle.|Texte intégral avec préface et notes de l'éditeur.",
    ),
    "magazine": (
        "Magazine|Revue|Journal|Numéro|Hebdomadaire|Mensuel|Quotidien|Hors-Série|Fascicule|Gazette",
        "Ancien|Collector|Spécial|Illustré|Rare|Original|Trimestriel|Complet|D'époque",
        "Paris Match|Le Monde|Télérama|L'équipe|Géo|Science Et Vie|Marie Claire|Le Figaro|Elle|Spirou|"
        "Pif Gadget|Auto Plus",
        "N° {n}|{month} {y}|Année {y}|Numéro {n}",
        "Magazine paru en {month} {y}, numéro {n}.|Revue complète avec ses pages de publicité d'époque.|"
        "Journal ancien en bon état, légères pliures.|Numéro spécial consacré à l'actualité du mois.|"
        "Exemplaire de {brand} conservé à l'abri de la lumière.",
    ),
    "jeu_video": (
        "Jeu Vidéo|Jeu|Fifa {n}|Call Of Duty|Assassin's Creed|Mario Kart|Zelda|Gta {k}|Final Fantasy {n}|"
        "Just Dance {y}|Pokémon|Battlefield {k}|Need For Speed|Les Sims {k}|Minecraft",
        "Complet|Neuf Sous Blister|Occasion|Collector|Goty|Deluxe|Ultimate|Remastered|Version Française|"
        "Import",
        "Ps4|Ps3|Xbox One|Xbox 360|Nintendo Switch|Wii|Nintendo Ds|Pc|Steam|Ubisoft|Electronic Arts|"
        "Square Enix|Activision|Sega|Capcom",
        "Pegi {a}|Édition {y}|Pack {k} Jeux|Code De Téléchargement",
        "Jeu vidéo complet avec boîtier et notice.|Disque en très bon état, testé et fonctionnel.|"
        "Classé PEGI {a}, jouable en solo ou en multijoueur.|Édition {adj} de {noun} sur {brand}.|"
        "Contient le jeu et son contenu téléchargeable.",
    ),
    "accessoire_gaming": (
        "Manette|Câble|Chargeur|Volant|Casque Gaming|Support|Housse|Étui|Station De Charge|Batterie|"
        "Adaptateur|Protection Écran|Joystick|Grip",
        "Sans Fil|Compatible|Filaire|Officiel|Rétroéclairé|Usb|Bluetooth|Ergonomique|Double Vibration",
        "Sony|Microsoft|Nintendo|Thrustmaster|Logitech|Razer|Hori|Bigben|Turtle Beach|Dobe",
        "Pour Ps4|Pour Switch|Pour Xbox One|{k} M|{mah} Mah",
        "Compatible avec la console, branchement simple et rapide.|"
        "Manette sans fil avec double vibration et batterie rechargeable.|"
        "Câble de charge {k} m pour jouer en rechargeant.|Accessoire officiel {brand} sous licence.",
    ),
    "console": (
        "Console|Console Portable|Console De Salon|Mini Console|Console Rétro|Pack Console|Borne Arcade",
        "Complète|En Boîte|Reconditionnée|Édition Limitée|Slim|Pro|Lite|Rétro|Hs Pour Pièces",
        "Playstation {k}|Nintendo 64|Game Boy|Super Nintendo|Xbox|Sega Megadrive|Game Boy Advance|"
        "Nintendo 3ds|Psp|Wii U|Gamecube|Dreamcast",
        "{go} Go|{n} Jeux Intégrés|Avec {k} Manettes|Hdmi",
        "Console testée et fonctionnelle, livrée avec câbles et manette.|Mémoire de {go} Go, sortie HDMI.|"
        "Console rétro avec {n} jeux intégrés.|Vendue complète dans sa boîte d'origine.",
    ),
    "jouet": (
        "Jouet|Peluche|Poupée|Puzzle|Jeu De Société|Ballon|Trottinette|Jeu De Construction|"
        "Voiture Télécommandée|Dinosaure|Circuit|Déguisement|Toboggan|Balançoire|Jeu De Cartes",
        "Éducatif|Enfant|Géant|Musical|Interactif|Magnétique|En Bois|Gonflable|Lumineux|Ludique",
        "Lego|Playmobil|Hasbro|Mattel|Vtech|Smoby|Djeco|Janod|Ravensburger|Asmodee|Fisher-Price|Chicco",
        "Dès {a} Ans|{p} Pièces|{a} Ans Et Plus|{k} Joueurs",
        "Jouet idéal pour les enfants dès {a} ans.|Favorise l'éveil et la motricité de l'enfant.|"
        "Jeu amusant pour toute la famille, de {k} à {k2} joueurs.|"
        "Matériaux robustes et sans danger, conforme aux normes CE.",
    ),
    "modelisme": (
        "Drone|Voiture Miniature|Maquette|Hélicoptère Rc|Avion Rc|Modèle Réduit|Camion Miniature|"
        "Voiture Rc|Quadricoptère|Train Miniature",
        "Télécommandé|Die Cast|Métal|Caméra Hd|Wifi Fpv|Brushless|4 Canaux|Pliable|Collection",
        "Burago|Majorette|Norev|Solido|Dji|Syma|Revell|Tamiya|Hot Wheels|Maisto|Hubsan",
        "1/{scale}|Caméra {res}p|{n} Minutes De Vol|2.4 Ghz",
        "Modèle réduit à l'échelle 1/{scale} en métal moulé.|"
        "Drone avec caméra HD {res}p et retour vidéo en temps réel.|Autonomie de vol d'environ {n} minutes.|"
        "Maquette à assembler et à peindre, colle non fournie.",
    ),
    "figurine": (
        "Figurine|Statuette|Figurine Pop|Buste|Figurine Articulée|Mini Figurine|Diorama|Funko Pop",
        "Collector|Articulée|Peinte À La Main|Édition Limitée|Officielle|Vinyle|Résine|Pvc|Manga",
        "Funko|Bandai|Marvel|Dc Comics|Star Wars|Dragon Ball|One Piece|Naruto|Disney|Tsume|Banpresto",
        "{h} Cm|N° {n}|Hauteur {h} Cm",
        "Figurine de collection d'environ {h} cm de haut.|"
        "Produit officiel sous licence, livré en boîte fenêtre.|"
        "Figurine en PVC peinte avec soin, idéale pour les fans.|Pièce de collection, socle inclus.",
    ),
    "carte": (
        "Carte|Cartes|Booster|Deck|Carte Holo|Display|Classeur De Cartes|Carte Rare|Starter|Paquet De Cartes",
        "Rare|Holo|Reverse|Ultra Rare|Gx|Ex|Vmax|Promo|Scellé|Française|Japonaise",
        "Pokémon|Yu-Gi-Oh|Magic The Gathering|Panini|Topps|Dragon Ball Super|Lorcana|Fifa 365",
        "{n}/{n2}|Lot De {k} Cartes|Série {n}|Pv {hp}",
        "Carte en excellent état, sortie de booster et protégée en sleeve.|Lot de {k} cartes sans doublon.|"
        "Carte rare holographique, numéro {n}/{n2}.|Envoi soigné sous toploader.",
    ),
    "wargame": (
        "Figurine Warhammer|Miniatures|Escouade|Boîte De Figurines|Socle|Peinture Acrylique|Dés|"
        "Décor De Jeu|Régiment|Armée",
        "Non Peinte|Peinte|Plastique|Métal|Rare|Sur Grappe|Montée|Fantastique|Héroïque",
        "Games Workshop|Warhammer 40k|Age Of Sigmar|Citadel|Blood Bowl|Space Marine|Necromunda|Reaper|"
        "Infinity",
        "{k} Figurines|28 Mm|Échelle {mm} Mm|{pts} Points",
        "Figurines pour jeu de bataille en plastique, à assembler.|"
        "Armée complète pour le jeu de bataille, environ {pts} points.|"
        "Peinture acrylique de haute qualité pour miniatures.|"
        "Figurines sur grappe, non montées et non peintes.",
    ),
    "bebe": (
        "Chaussettes|Chaussons|Chaussettes Bébé|Bavoir|Chaussons Bébé|Bonnet|Moufles|Collants|"
        "Chaussettes Antidérapantes|Body",
        "Naissance|Coton Bio|Antidérapant|Doux|Mignon|Tricot|Nouveau-Né|Fille|Garçon",
        "Petit Bateau|Absorba|Kiabi|Obaibi|Tex Baby|Dim",
        "{mo} Mois|Lot De {k} Paires|Taille {ts}|0-{mo} Mois",
        "Chaussettes pour bébé en coton doux, taille {mo} mois.|"
        "Lot de {k} paires antidérapantes pour les premiers pas.|Lavable en machine à 30 degrés.|"
        "Idéal pour garder les petits pieds au chaud.",
    ),
    "puericulture": (
        "Poussette|Siège Auto|Lit Parapluie|Chaise Haute|Porte-Bébé|Sac À Langer|Babyphone|Tapis D'éveil|"
        "Transat Bébé|Biberon|Baignoire Bébé|Matelas À Langer",
        "Pliable|Inclinable|Compact|Isofix|Ergonomique|Réglable|Léger|Sécurisé|Évolutif",
        "Bébé Confort|Chicco|Babymoov|Maxi-Cosi|Tigex|Béaba|Graco|Safety 1st|Ergobaby",
        "Groupe {k}|0-{kg} Kg|Dès {mo} Mois|Charge Max {kg} Kg",
        "Équipement de puériculture pour bébé de 0 à {mo} mois.|"
        "Facile à plier et à transporter, idéal en voyage.|Harnais de sécurité 5 points et dossier réglable.|"
        "Conforme aux normes de sécurité européennes.",
    ),
    "meuble": (
        "Table Basse|Chaise|Armoire|Commode|Bureau|Étagère|Buffet|Lit|Canapé|Meuble Tv|Table De Chevet|"
        "Bibliothèque|Tabouret|Fauteuil",
        "Scandinave|Industriel|Moderne|Bois Massif|Chêne|Laqué|Design|Contemporain|Vintage|Pin",
        "Ikea|Conforama|Vidaxl|Maisons Du Monde|Alinéa|But|Homcom|Vente-Unique",
        "{d}x{d2} Cm|{k} Tiroirs|{k} Portes|{k} Places",
        "Meuble en bois massif, dimensions {d} x {d2} cm.|Montage facile, notice et visserie fournies.|"
        "Design moderne qui s'intègre dans le salon ou la chambre.|"
        "Structure robuste avec {k} tiroirs de rangement.",
    ),
    "linge": (
        "Coussin|Housse De Coussin|Housse De Couette|Drap Housse|Taie D'oreiller|Plaid|Rideau|Nappe|"
        "Serviette De Bain|Parure De Lit|Couverture|Jeté De Canapé",
        "Décoratif|Velours|Coton|Lin|Polaire|Imprimé|Brodé|Doux|Réversible|Uni",
        "Maison|Linvosges|Blanc Des Vosges|Tradilinge|Home Textile|Essix|Douceur D'intérieur",
        "{d}x{d} Cm|{d}x{d2} Cm|{k} Personnes|Lot De {k}",
        "Housse de coussin décorative {d} x {d} cm, fermeture éclair invisible.|"
        "Tissu doux et résistant, lavable en machine à 40 degrés.|"
        "Apporte une touche chaleureuse à votre canapé.|Parure de lit en coton pour lit {k} personnes.",
    ),
    "epicerie": (
        "Café|Thé|Chocolat|Bonbons|Biscuits|Épices|Miel|Confiture|Huile D'olive|Pâtes|Capsules|Sirop|"
        "Sauce|Farine|Infusion",
        "Bio|Artisanal|Équitable|Gourmand|Sans Gluten|Naturel|Vegan|Intense|Aromatisé",
        "Nespresso|Lavazza|Lindt|Haribo|Kusmi Tea|Bonne Maman|Lu|Carte Noire|Dolce Gusto",
        "{g} G|{ml} Ml|{k} Capsules|{kg} Kg|Lot De {k}",
        "Produit alimentaire, à consommer de préférence avant la date indiquée.|"
        "Paquet de {g} g, à conserver dans un endroit sec.|"
        "Saveur intense et gourmande, ingrédients d'origine naturelle.|Boîte de {k} capsules compatibles.",
    ),
    "deco": (
        "Cadre Photo|Vase|Miroir|Bougie|Horloge Murale|Sticker Mural|Guirlande Lumineuse|Tableau|Lampe|"
        "Statue|Photophore|Décoration De Noël|Toile Imprimée|Lanterne",
        "Décoratif|Mural|Lumineux|Led|Doré|Bohème|Vintage|Design|Romantique|Zen",
        "Atmosphera|Gifi|Hema|Lumisky|Zodio|Jardin D'ulysse",
        "{h} Cm|{k} Led|Diamètre {h} Cm|{d}x{d2} Cm",
        "Objet de décoration pour sublimer votre intérieur.|Guirlande de {led} LED, lumière blanche chaude.|"
        "Dimensions : {d} x {d2} cm, fixation murale incluse.|Idéal pour offrir ou pour décorer le salon.",
    ),
    "animalerie": (
        "Collier|Laisse|Gamelle|Griffoir|Arbre À Chat|Panier|Coussin Pour Chien|Jouet Pour Chat|Harnais|"
        "Niche|Litière|Aquarium|Cage|Croquettes",
        "Chien|Chat|Réglable|Réfléchissant|Anti-Traction|Lavable|Rongeur|Oiseau|Chiot",
        "Trixie|Zolux|Ferplast|Kong|Royal Canin|Flamingo|Karlie",
        "Taille {ts}|{cm} Cm|Pour Chien De {kg} Kg|{l} L",
        "Accessoire pour chien et chat, confortable et résistant.|"
        "Collier réglable de {cm} cm pour chien de taille moyenne.|"
        "Facile à nettoyer, convient aux animaux de compagnie.|"
        "Griffoir avec plateforme et jouet suspendu pour chat.",
    ),
    "papeterie": (
        "Cahier|Carnet|Stylo|Agenda|Classeur|Trousse|Feutres|Crayons De Couleur|Bloc-Notes|Calendrier|"
        "Enveloppes|Ramette Papier|Surligneur|Cartable|Étiquettes",
        "A4|A5|Grands Carreaux|Ligné|Spirale|Effaçable|Scolaire|Kraft|Personnalisé",
        "Clairefontaine|Oxford|Bic|Stabilo|Pilot|Exacompta|Maped|Leitz|Moleskine|Quo Vadis",
        "{p} Pages|{gsm} G/M²|Lot De {k}|{y}-{y2}",
        "Fourniture scolaire et de bureau de qualité.|Cahier de {p} pages, papier {gsm} g/m².|"
        "Lot de {k} stylos à encre gel, écriture fluide.|Agenda scolaire {y}-{y2}, une journée par page.",
    ),
    "mobilier_jardin": (
        "Salon De Jardin|Table De Jardin|Chaise De Jardin|Transat|Bain De Soleil|Parasol|Hamac|Balancelle|"
        "Banc De Jardin|Fauteuil De Jardin|Tonnelle|Pergola",
        "Résine Tressée|Aluminium|Teck|Pliant|Extérieur|Inclinable|Empilable|Acier|Anti-Uv",
        "Hespéride|Keter|Vidaxl|Outsunny|Proloisirs|Allibert",
        "{k} Places|{d}x{d2} Cm|Diamètre {h} Cm",
        "Mobilier de jardin résistant aux intempéries.|"
        "Salon de jardin {k} places en résine tressée avec coussins.|"
        "Parasol inclinable, toile anti-UV de {d} cm de diamètre.|"
        "Idéal pour profiter de la terrasse et du balcon.",
    ),
    "piscine": (
        "Piscine Hors Sol|Pompe|Filtre|Bâche|Robot De Piscine|Épuisette|Liner|Skimmer|Échelle De Piscine|"
        "Chlore|Spa Gonflable|Cartouche Filtrante|Thermomètre|Brosse",
        "Tubulaire|Autoportante|Gonflable|Électrique|Solaire|Hivernage|Automatique|Ronde|Rectangulaire",
        "Intex|Bestway|Gré|Zodiac|Dolphin|Kokido|Laguna",
        "{d}x{d2} Cm|{m3} M³/H|{l} L|Ø {d} Cm",
        "Accessoire pour piscine hors sol et enterrée.|Pompe de filtration {m3} m³/h pour une eau claire.|"
        "Piscine tubulaire {d} x {d2} cm, montage rapide sans outils.|"
        "Bâche d'hivernage résistante aux UV.",
    ),
    "outil_jardin": (
        "Tondeuse|Taille-Haie|Débroussailleuse|Sécateur|Tuyau D'arrosage|Pelle|Râteau|Brouette|Souffleur|"
        "Tronçonneuse|Arrosoir|Bêche|Enrouleur|Scarificateur",
        "Électrique|Thermique|Sans Fil|Télescopique|Professionnel|Ergonomique|Inox|Rechargeable|Lithium",
        "Bosch|Gardena|Ryobi|Black+Decker|Makita|Einhell|Fiskars|Stihl",
        "{w} W|{v} V|{k} M|{cm} Cm De Coupe",
        "Outil de jardinage robuste pour l'entretien du jardin.|"
        "Moteur de {w} W, largeur de coupe {cm} cm.|Batterie lithium {v} V rechargeable, grande autonomie.|"
        "Poignée ergonomique pour un travail sans fatigue.",
    ),
}

# Which families a mis-worded product borrows from: the confusions a real catalog has.
_TEXT_NEIGHBOURS: dict[str, tuple[str, ...]] = {
    "livre": ("magazine", "papeterie"),
    "magazine": ("livre",),
    "jeu_video": ("console", "accessoire_gaming"),
    "accessoire_gaming": ("console", "jeu_video"),
    "console": ("jeu_video", "accessoire_gaming"),
    "jouet": ("figurine", "modelisme", "carte"),
    "modelisme": ("jouet", "figurine"),
    "figurine": ("wargame", "jouet"),
    "carte": ("jouet", "jeu_video"),
    "wargame": ("figurine",),
    "bebe": ("puericulture", "linge"),
    "puericulture": ("bebe", "jouet"),
    "meuble": ("mobilier_jardin", "deco"),
    "linge": ("deco", "meuble"),
    "epicerie": ("animalerie",),
    "deco": ("linge", "meuble"),
    "animalerie": ("epicerie", "outil_jardin"),
    "papeterie": ("livre", "magazine"),
    "mobilier_jardin": ("meuble", "piscine"),
    "piscine": ("mobilier_jardin", "outil_jardin"),
    "outil_jardin": ("mobilier_jardin", "piscine"),
}

_COLOURS = "Bleu|Rouge|Noir|Blanc|Vert|Gris|Rose|Jaune|Beige|Marron|Violet|Orange|Multicolore|Argent|Doré"
_GENERIC = "Neuf|Nouveau|Qualité Premium|Pas Cher|Original|Idée Cadeau|Promo|Haute Qualité|Lot|Mode|Pratique"
_GENERIC_SENTENCES = (
    "Livraison rapide et soignée.|Produit neuf, jamais utilisé.|"
    "N'hésitez pas à nous contacter pour toute question.|Photo non contractuelle.|"
    "Satisfait ou remboursé sous 30 jours.|Expédition sous 48h depuis la France.|"
    "Caractéristiques : couleur {colour}, matériau de qualité.|Le colis contient : 1 x {noun}.|"
    "Retour & échange gratuits.|Garantie {k} ans."
)
_MONTHS = "Janvier|Février|Mars|Avril|Mai|Juin|Juillet|Août|Septembre|Octobre|Novembre|Décembre"
_SIZES = "S|M|L|XL|XXL"
# Titles mostly carry a family noun (the strong signal); the last template has none, as some real
# titles are only a brand and generic words.
_TITLE_TEMPLATES = (
    "{noun} {adj} {brand} {spec}",
    "{noun} {adj} {colour} {spec}",
    "{brand} - {noun} {adj} {colour}",
    "{noun} {brand} {spec} {generic}",
    "Lot De {k} {noun} {adj}",
    "{adj} {noun} {spec} - {brand}",
    "{noun} {adj} {generic} {colour}",
    "{brand} {noun}",
    "{generic} {brand} {adj} {spec}",
)
# Number placeholders: name -> (low, high) inclusive.
_NUMBERS: dict[str, tuple[int, int]] = {
    "n": (1, 30),
    "n2": (31, 250),
    "y": (1960, 2024),
    "p": (48, 900),
    "k": (2, 8),
    "a": (3, 14),
    "d": (30, 220),
    "d2": (30, 220),
    "h": (8, 60),
    "scale": (12, 87),
    "res": (480, 1080),
    "go": (8, 512),
    "mah": (800, 5000),
    "hp": (30, 330),
    "mm": (15, 54),
    "pts": (500, 3000),
    "mo": (3, 24),
    "kg": (4, 40),
    "g": (100, 1000),
    "ml": (50, 1000),
    "led": (10, 200),
    "cm": (20, 80),
    "l": (5, 120),
    "gsm": (70, 120),
    "m3": (2, 12),
    "w": (300, 2200),
    "v": (12, 40),
}
_HTML_ENTITIES = (("&", "&amp;"), ("é", "&eacute;"), ("è", "&egrave;"), ("à", "&agrave;"), ("ê", "&ecirc;"))

# Image families: (shape, RGB colour). Bold colours and distinct shapes so a small CNN at 64-96 px
# learns them in a few epochs; colours repeat across families so the shape matters too.
_C = {
    "rouge": (215, 35, 35),
    "vert": (35, 155, 55),
    "bleu": (35, 65, 200),
    "jaune": (235, 195, 10),
    "magenta": (200, 35, 165),
    "cyan": (10, 180, 205),
    "orange": (245, 130, 10),
    "violet": (115, 45, 165),
    "marron": (125, 75, 35),
    "rose": (245, 120, 170),
    "sombre": (45, 45, 50),
}
IMAGE_FAMILIES: dict[str, tuple[str, tuple[int, int, int]]] = {
    "livre_ancien": ("diamond", _C["marron"]),
    "livre_neuf": ("square", _C["rouge"]),
    "lot_livres": ("stripes", _C["marron"]),
    "jeu_boite": ("disc", _C["bleu"]),
    "jeu_pack": ("cross", _C["bleu"]),
    "jeu_pc": ("ring", _C["sombre"]),
    "jouet_enfant": ("disc", _C["jaune"]),
    "jeu_societe": ("checker", _C["rouge"]),
    "jeu_plein_air": ("triangle", _C["vert"]),
    "papier": ("stripes", _C["bleu"]),
    "meuble": ("square", _C["marron"]),
    "figurine": ("triangle", _C["violet"]),
    "accessoire": ("ring", _C["rouge"]),
    "console": ("square", _C["sombre"]),
    "bebe": ("disc", _C["rose"]),
    "puericulture": ("ring", _C["rose"]),
    "epicerie": ("disc", _C["orange"]),
    "deco": ("diamond", _C["magenta"]),
    "animalerie": ("triangle", _C["orange"]),
    "piscine": ("disc", _C["cyan"]),
    "outil_jardin": ("cross", _C["vert"]),
}
TEXT_FAMILIES: tuple[str, ...] = tuple(_TEXT)

_BACKGROUNDS = (
    (246, 246, 244),
    (236, 232, 222),
    (222, 228, 238),
    (238, 226, 226),
    (214, 214, 214),
    (226, 238, 226),
)


def _split(words: str) -> tuple[str, ...]:
    return tuple(words.split("|"))


class _Vocab(NamedTuple):
    nouns: tuple[str, ...]
    adjs: tuple[str, ...]
    brands: tuple[str, ...]
    specs: tuple[str, ...]
    sentences: tuple[str, ...]


_VOCAB: dict[str, _Vocab] = {name: _Vocab(*(_split(part) for part in parts)) for name, parts in _TEXT.items()}
_COLOUR_WORDS, _GENERIC_WORDS = _split(_COLOURS), _split(_GENERIC)
_GENERIC_SENTENCE_LIST = _split(_GENERIC_SENTENCES)
_MONTH_WORDS, _SIZE_WORDS = _split(_MONTHS), _split(_SIZES)
_NUMBER_KEYS = tuple(_NUMBERS)
_NUMBER_LOW = np.array([lo for lo, _ in _NUMBERS.values()])
_NUMBER_SPAN = np.array([hi - lo + 1 for lo, hi in _NUMBERS.values()])


def _pick(rng: np.random.Generator, items: tuple[str, ...]) -> str:
    return items[int(rng.integers(len(items)))]


def _fill(template: str, slots: dict[str, str]) -> str:
    # Two passes: a slot's value may itself hold a number placeholder ("Fifa {n}", "Tome {n}").
    return template.format_map(slots).format_map(slots)


def _product_text(rng: np.random.Generator, family: str) -> tuple[str, str]:
    """(designation, description) for one product worded like ``family``."""
    vocab = _VOCAB[family]
    numbers = _NUMBER_LOW + rng.integers(0, 1 << 30, size=len(_NUMBER_KEYS)) % _NUMBER_SPAN
    slots = {key: str(int(v)) for key, v in zip(_NUMBER_KEYS, numbers, strict=True)}
    slots["y2"] = str(int(slots["y"]) + 1)
    slots["k2"] = str(int(slots["k"]) + 2)
    slots["month"], slots["ts"] = _pick(rng, _MONTH_WORDS), _pick(rng, _SIZE_WORDS)
    slots["colour"], slots["generic"] = _pick(rng, _COLOUR_WORDS), _pick(rng, _GENERIC_WORDS)
    slots["noun"], slots["adj"], slots["brand"] = (
        _pick(rng, vocab.nouns),
        _pick(rng, vocab.adjs),
        _pick(rng, vocab.brands),
    )
    slots["spec"] = _pick(rng, vocab.specs)
    title = _fill(_pick(rng, _TITLE_TEMPLATES), slots)

    if rng.random() < MISSING_DESCRIPTION:
        return title, ""
    # Mostly 1-3 sentences; a quarter are long (4-8), as real seller descriptions are. Family sentences
    # come first (the seller describes the product, then the shop's boilerplate), none repeated.
    long = rng.random() < 0.25
    own = int(rng.integers(2, len(vocab.sentences) + 1)) if long else int(rng.integers(1, 3))
    boilerplate = int(rng.integers(2, 5)) if long else int(rng.integers(0, 2))
    picked = [vocab.sentences[j] for j in rng.permutation(len(vocab.sentences))[:own]]
    picked += [_GENERIC_SENTENCE_LIST[j] for j in rng.permutation(len(_GENERIC_SENTENCE_LIST))[:boilerplate]]
    sentences = [_fill(sentence, slots) for sentence in picked]
    if rng.random() < 0.6:
        return title, " ".join(sentences)
    # HTML as sellers paste it: entities, paragraphs or <br /> line breaks.
    escaped = []
    for sentence in sentences:
        for char, entity in _HTML_ENTITIES:
            sentence = sentence.replace(char, entity)
        escaped.append(sentence)
    if rng.random() < 0.5:
        return title, "".join(f"<p>{s}</p>" for s in escaped)
    return title, "<br />".join(escaped)


def _jitter(rng: np.random.Generator, colour: tuple[int, int, int], amount: int) -> tuple[int, int, int]:
    shifted = np.clip(np.asarray(colour) + rng.integers(-amount, amount + 1, size=3), 0, 255)
    return (int(shifted[0]), int(shifted[1]), int(shifted[2]))


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, fill) -> None:
    box = (cx - r, cy - r, cx + r, cy + r)
    if shape == "disc":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle((cx - 0.85 * r, cy - 0.85 * r, cx + 0.85 * r, cy + 0.85 * r), fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx + r, cy + 0.8 * r), (cx - r, cy + 0.8 * r)], fill=fill)
    elif shape == "diamond":
        draw.polygon([(cx, cy - r), (cx + 0.8 * r, cy), (cx, cy + r), (cx - 0.8 * r, cy)], fill=fill)
    elif shape == "ring":
        draw.ellipse(box, outline=fill, width=max(2, round(0.33 * r)))
    elif shape == "cross":
        t = 0.3 * r
        draw.rectangle((cx - r, cy - t, cx + r, cy + t), fill=fill)
        draw.rectangle((cx - t, cy - r, cx + t, cy + r), fill=fill)
    elif shape == "stripes":
        band = 2 * r / 7  # four bands with three gaps, like a stack of books or sheets
        for i in range(0, 7, 2):
            top = cy - r + i * band
            draw.rectangle((cx - r, top, cx + r, top + band), fill=fill)
    elif shape == "checker":
        cell = 2 * r / 4
        for i in range(4):
            for j in range(4):
                if (i + j) % 2 == 0:
                    x0, y0 = cx - r + i * cell, cy - r + j * cell
                    draw.rectangle((x0, y0, x0 + cell, y0 + cell), fill=fill)
    else:  # pragma: no cover - guarded by IMAGE_FAMILIES
        raise ValueError(f"unknown shape {shape!r}")


def _product_image(rng: np.random.Generator, family: str, side: int) -> bytes:
    """JPEG bytes: the family's shape on a plain background, jittered and noised, inside a border."""
    shape, colour = IMAGE_FAMILIES[family]
    # Real product photos are padded with a white or black border, sometimes a thick one.
    fraction = rng.uniform(0.22, 0.32) if rng.random() < 0.15 else rng.uniform(0.05, 0.20)
    border = max(1, round(fraction * side))
    inner = max(8, side - 2 * border)
    background = _jitter(rng, _BACKGROUNDS[int(rng.integers(len(_BACKGROUNDS)))], 8)
    content = Image.new("RGB", (inner, inner), background)
    r = inner * rng.uniform(0.26, 0.40)
    cx, cy = inner / 2 + inner * rng.uniform(-0.12, 0.12, size=2)
    _draw_shape(ImageDraw.Draw(content), shape, float(cx), float(cy), float(r), _jitter(rng, colour, 22))
    noisy = np.asarray(content, dtype=np.float32) + rng.normal(0.0, 6.0, size=(inner, inner, 3))
    content = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))

    border_colour = (255, 255, 255) if rng.random() < 0.7 else (0, 0, 0)
    canvas = Image.new("RGB", (side, side), border_colour)
    offset = (side - inner) // 2
    canvas.paste(content, (offset, offset))
    buffer = io.BytesIO()
    canvas.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _class_counts(size: int) -> dict[int, int]:
    """Per-code product counts summing to ``size``, each at least ceil(size / 100)."""
    floor = math.ceil(size / 100)
    weights = np.sqrt(np.array([_REAL_COUNTS[c] for c in RAKUTEN_CODES], dtype=float))
    quotas = size * weights / weights.sum()
    counts = np.maximum(np.floor(quotas).astype(int), floor)
    # Largest remainder first to hit the exact total; then take any excess back from the largest classes.
    for i in np.argsort(-(quotas - np.floor(quotas)), kind="stable"):
        if counts.sum() >= size:
            break
        counts[i] += 1
    while counts.sum() > size:
        counts[int(np.argmax(counts))] -= 1
    return {code: int(n) for code, n in zip(RAKUTEN_CODES, counts, strict=True)}


def _manifest(size: int, seed: int, image_size: int) -> dict[str, object]:
    return {
        "generator": "mmpc.demo_catalog",
        "version": _GENERATOR_VERSION,
        "size": size,
        "seed": seed,
        "image_size": image_size,
    }


def _holds_same_catalog(out: Path, manifest: dict[str, object]) -> bool:
    try:
        return json.loads((out / _MANIFEST).read_text()) == manifest
    except (OSError, ValueError):
        return False


def _generate(folder: Path, size: int, seed: int, image_size: int) -> None:
    # Separate streams per concern, so tuning the images never shifts the text or the labels.
    rng_rows = np.random.default_rng([seed, 0])
    rng_text = np.random.default_rng([seed, 1])
    rng_image = np.random.default_rng([seed, 2])

    labels = np.concatenate([np.full(n, code) for code, n in _class_counts(size).items()])
    rng_rows.shuffle(labels)
    # Unique 9-10 digit ids, like the challenge's.
    productids = 100_000_000 + rng_rows.choice(4_200_000_000, size, replace=False)
    imageids = 900_000_000 + rng_rows.choice(500_000_000, size, replace=False)
    text_noise = rng_rows.random(size) < TEXT_NOISE
    image_noise = rng_rows.random(size) < IMAGE_NOISE
    image_names = tuple(IMAGE_FAMILIES)

    designations, descriptions = [], []
    image_dir = folder / "images" / "image_train"
    image_dir.mkdir(parents=True)
    for i in range(size):
        family = DEMO_FAMILIES[int(labels[i])]
        text_family = family.text
        if text_noise[i]:
            text_family = _pick(rng_text, _TEXT_NEIGHBOURS[text_family])
        title, description = _product_text(rng_text, text_family)
        designations.append(title)
        descriptions.append(description)

        image_family = family.image
        if image_noise[i]:
            others = tuple(name for name in image_names if name != image_family)
            image_family = _pick(rng_image, others)
        path = image_dir / f"image_{int(imageids[i])}_product_{int(productids[i])}.jpg"
        path.write_bytes(_product_image(rng_image, image_family, image_size))

    frame = pd.DataFrame(
        {
            "designation": designations,
            "description": descriptions,
            "productid": productids.astype(np.int64),
            "imageid": imageids.astype(np.int64),
        }
    )
    frame.to_csv(folder / "X_train_update.csv", index=True, lineterminator="\n", encoding="utf-8")
    pd.DataFrame({"prdtypecode": labels.astype(np.int64)}).to_csv(
        folder / "Y_train_CVw08PX.csv", index=True, lineterminator="\n", encoding="utf-8"
    )


def write_demo_catalog(out: str | Path, *, size: int = 3000, seed: int = 0, image_size: int = 96) -> Path:
    """Write a generated catalog in the Rakuten challenge layout under ``out`` and return ``out``.

    Writes ``X_train_update.csv``, ``Y_train_CVw08PX.csv``, ``images/image_train/*.jpg`` and
    ``demo_catalog.json`` (the arguments). A folder that already holds the catalog for the same
    arguments is returned untouched; any other non-empty folder is refused. The catalog is built in a
    temporary folder beside ``out`` and renamed into place, so an interrupted run leaves nothing behind.
    """
    if size < len(RAKUTEN_CODES):
        raise ValueError(f"size must be at least {len(RAKUTEN_CODES)} (one product per code), got {size}")
    if image_size < 32:
        raise ValueError(f"image_size must be at least 32 pixels, got {image_size}")
    out = Path(out)
    manifest = _manifest(int(size), int(seed), int(image_size))
    if out.exists():
        if not out.is_dir():
            raise FileExistsError(f"{out} exists and is not a folder; cannot write a demo catalog there")
        if any(out.iterdir()):
            if _holds_same_catalog(out, manifest):
                return out
            raise FileExistsError(
                f"{out} is not empty and does not hold a demo catalog written with size={size}, seed={seed}, "
                f"image_size={image_size}; refusing to overwrite it (remove it or choose another folder)"
            )
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        _generate(staging, int(size), int(seed), int(image_size))
        # The manifest goes last: its presence marks a complete catalog.
        (staging / _MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        os.chmod(staging, 0o755)  # mkdtemp makes it 0700
        if out.exists():
            out.rmdir()  # empty (checked above); rename cannot replace it portably
        try:
            staging.rename(out)
        except OSError:
            # Someone else finished the same catalog first: theirs is as good as ours.
            if _holds_same_catalog(out, manifest):
                shutil.rmtree(staging)
                return out
            raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out
