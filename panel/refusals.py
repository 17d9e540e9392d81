"""How the panel shows a refusal of the catalog (CONTRACT's English, as `ops apply` prints it): in
Portuguese where it has a translation, beside the form field its key names."""

from __future__ import annotations

import re

from catalog import ConfigError


def refusal(error: ConfigError | None) -> dict[str, str | None]:
    """What a page shows of a refusal: the problem in Portuguese, and the field it goes beside."""
    if error is None:
        return {"error": None, "error_at": None}
    return {"error": pt(str(error).split(": ", 1)[-1]), "error_at": field_of(error.key)}


def field_of(key: str) -> str:
    """The form field a refusal's key names: `offers[1].price` → `offers-1-price`, `welcome.text` → `welcome-text`."""
    return re.sub(r"[\[\].]+", "-", key).strip("-")


# The catalog's refusals (CONTRACT's English, as `ops apply` prints them) as a seller reads them.
PROBLEMS = [
    (r"is required \(or welcome\.media_url\)", "Escreva o texto das boas-vindas (ou dê uma imagem)."),
    (r"is required \(or delivery_chat_id\)", "Diga o que a oferta entrega: um link, ou o ID de um grupo/canal VIP."),
    (r"give delivery_link or delivery_chat_id, not both", "Dê um link ou um grupo VIP, não os dois."),
    (r"must be an integer chat id such as -100123", "O ID do grupo é um número como -1001234567890."),
    (r"must be a decimal string such as \"19\.90\".*", "Escreva o preço como 19,90."),
    (r"give discount_percent or price \(one of them\)", "Dê um desconto (%) ou um preço, um dos dois."),
    (r"must be a whole number from 1 to 99", "Escreva um desconto de 1 a 99."),
    (r"must be a whole number from (\d+) to (\d+)", r"Escreva um número de \1 a \2."),
    (
        r"must be the WhatsApp number in digits.*",
        "Escreva o número só com dígitos, com 55 e o DDD (ex.: 5511999999999).",
    ),
    (r"must be digits", "Use só dígitos."),
    (r"no offer '.*' in this bot's offers", "Escolha uma oferta deste bot."),
    (r"an offer cannot be its own bump", "Uma oferta não pode ser o order bump dela mesma."),
    (r"must contain \{code\}.*", "Deixe {code} no texto: é onde entra o código PIX."),
    (r"must contain \{token\}.*", "Deixe {token} no texto: é onde entra o código do clique."),
    (r"must be one of .*", "Escolha uma das opções."),
    (r"must be an integer from 1 to (\d+)", r"Escreva um número de 1 a \1."),
    (r"bot '.*' is in the pool twice", "Este bot já está no pool."),
    (r"must be a non-empty list of bot ids.*", "Escolha pelo menos um bot."),
    (r"must be greater than zero", "O preço precisa ser maior que zero."),
    (r"needs delivery_chat_id.*", "Uma assinatura precisa do ID do grupo/canal VIP."),
    (r"must be at least 10 seconds", "A duração mínima é de 10 segundos."),
    (r"must be at most 365 days", "A duração máxima é de 365 dias."),
    (r"must be a duration.*", "Escreva a duração como 30d, 12h ou 90m."),
    (r"must be a whole number of minutes from 5 to 10080", "O PIX vale de 5 a 10080 minutos."),
    (r"is required for a bot with offers", "Escolha o gateway que recebe os pagamentos destas ofertas."),
    (r"is required with pixel_id.*", "O pixel da Meta precisa do token da API de Conversões."),
    (r"is required with pixel_access_token", "O token da API de Conversões precisa do ID do pixel."),
    (r"is required with tiktok_access_token", "O token do TikTok precisa do código do pixel."),
    (r"must be an http\(s\) URL.*", "Escreva um endereço que comece com https:// (ou envie o arquivo)."),
    (r"must be at most (\d+) characters", r"Use no máximo \1 caracteres."),
    (r"is required", "Preencha este campo."),
    (r"must not be empty", "Preencha este campo."),
]


# `ops broadcast`'s refusals (actors.broadcasts.BroadcastError), as a seller reads them.
BROADCAST_PROBLEMS = [
    (r"must not be empty", "Escreva a mensagem."),
    (r"(\d+) characters, a message takes at most (\d+)", r"A mensagem tem \1 caracteres; o máximo é \2."),
    (r"must be an http\(s\) URL", "Escreva um endereço que comece com https://"),
    (r".* is not a segment .*", "Escolha o público (e, para campanha ou origem, o valor)."),
    (r"its account is suspended", "Sua conta está suspensa."),
    (r"bot .* has no offer .*", "Escolha uma oferta deste bot."),
]


def pt(problem: str, table: list[tuple[str, str]] = PROBLEMS) -> str:
    """A refusal in Portuguese where `table` has a translation (the catalog's by default); as it is otherwise."""
    for pattern, words in table:
        if re.fullmatch(pattern, problem):
            return re.sub(pattern, words, problem)
    return problem
